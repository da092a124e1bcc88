package PVE::Storage;

# Stand-in for pve-storage's PVE::Storage (pve/sim only): loading a Custom plugin, reading
# storage.cfg, and the functions PVE wraps around a backup-provider plugin
# (PVE-BACKUP-PROVIDER.md §1): storage_info's checks, new_backup_provider,
# update_volume_attribute (protected: get + list first), prune_mark_backup_group (the real
# algorithm, in our words).

use strict;
use warnings;

use POSIX ();

our $APIVER = 15;
our $APIAGE = 6;
our $SAFE_CHAR_CLASS_RE = qr/[a-zA-Z0-9\-\.\+\=\_]/;
our %PLUGINS;    # type => class

sub pve_root { return $ENV{PROXBORG_PVE_ROOT} || '/etc/pve'; }

# The Custom/*.pm loader: isa Plugin, can api, API version window; errors become warnings.
sub load_custom_plugin {
    my ($file) = @_;
    my ($base) = $file =~ m!([^/]+)\.pm$!;
    my $class = "PVE::Storage::Custom::$base";
    eval {
        require $file;
        die "not derived from PVE::Storage::Plugin\n" if !$class->isa('PVE::Storage::Plugin');
        die "does not provide an api() method\n" if !$class->can('api');
        my $api = $class->api();
        die "implements an API version newer than current ($api > $APIVER)\n" if $api > $APIVER;
        die "API version too old ($api < " . ($APIVER - $APIAGE) . ")\n"
            if $api < $APIVER - $APIAGE;
        warn "Plugin \"$class\" is implementing an older storage API, an upgrade is recommended\n"
            if $api != $APIVER;
        $PLUGINS{ $class->type() } = $class;
    };
    warn "Error loading storage plugin \"$class\": $@" if $@;
}

sub config {
    my $file = pve_root() . "/storage.cfg";
    open(my $fh, '<', $file) or die "cannot read $file: $!\n";
    my ($cfg, $cur) = ({ ids => {} }, undef);
    while (my $line = <$fh>) {
        chomp $line;
        next if $line =~ /^\s*#/;
        if ($line !~ /\S/) { $cur = undef; next; }
        if ($line =~ /^(\S+):\s*(\S+)\s*$/) {
            $cur = $cfg->{ids}->{$2} = { type => $1 };
        } elsif ($cur && $line =~ /^\s+(\S+)(?:\s+(.*?))?\s*$/) {
            $cur->{$1} = $2 // 1;
        }
    }
    return $cfg;
}

sub storage_config {
    my ($cfg, $storeid) = @_;
    return $cfg->{ids}->{$storeid} // die "storage '$storeid' does not exist\n";
}

sub plugin_of {
    my ($scfg) = @_;
    return $PLUGINS{ $scfg->{type} } // die "storage type '$scfg->{type}' is not loaded\n";
}

sub storage_has_feature {
    my ($cfg, $storeid, $feature) = @_;
    return plugin_of(storage_config($cfg, $storeid))->storage_has_feature($feature);
}

sub activate_storage {
    my ($cfg, $storeid) = @_;
    my $scfg = storage_config($cfg, $storeid);
    my $plugin = plugin_of($scfg);
    die "storage '$storeid' is not online\n" if !$plugin->check_connection($storeid, $scfg);
    $plugin->activate_storage($storeid, $scfg, {});
}

sub new_backup_provider {
    my ($cfg, $storeid, $log_function) = @_;
    die "storage '$storeid' does not support backup provider functionality\n"
        if !storage_has_feature($cfg, $storeid, 'backup-provider');
    my $scfg = storage_config($cfg, $storeid);
    return plugin_of($scfg)->new_backup_provider($scfg, $storeid, $log_function);
}

sub parse_volume_id {
    my ($volid) = @_;
    return ($1, $2) if $volid =~ m/^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$/i;
    die "unable to parse volume ID '$volid'\n";
}

sub volume_list {
    my ($cfg, $storeid, $vmid, $content) = @_;
    activate_storage($cfg, $storeid);
    my $scfg = storage_config($cfg, $storeid);
    my $res = plugin_of($scfg)->list_volumes($storeid, $scfg, $vmid, [$content // 'backup']);
    return [sort { $a->{volid} cmp $b->{volid} } @$res];
}

sub get_volume_attribute {
    my ($cfg, $volid, $attribute) = @_;
    my ($storeid, $volname) = parse_volume_id($volid);
    my $scfg = storage_config($cfg, $storeid);
    return plugin_of($scfg)->get_volume_attribute($scfg, $storeid, $volname, $attribute);
}

sub update_volume_attribute {
    my ($cfg, $volid, $attribute, $value) = @_;
    my ($storeid, $volname) = parse_volume_id($volid);
    my $scfg = storage_config($cfg, $storeid);
    my $plugin = plugin_of($scfg);
    my ($vtype, undef, $vmid) = $plugin->parse_volname($volname);
    if ($attribute eq 'protected' && $value
        && !$plugin->get_volume_attribute($scfg, $storeid, $volname, 'protected'))
    {
        my $max = $scfg->{'max-protected-backups'} // -1;
        if ($max >= 0) {
            my $n = grep { $_->{protected} }
                @{ $plugin->list_volumes($storeid, $scfg, $vmid, ['backup']) };
            die "backup limit for protected backups reached ($max)\n" if $n >= $max;
        }
    }
    return $plugin->update_volume_attribute($scfg, $storeid, $volname, $attribute, $value);
}

sub prune_backups {
    my ($cfg, $storeid, $keep, $vmid, $type, $dryrun, $logfunc) = @_;
    my $scfg = storage_config($cfg, $storeid);
    $keep //= parse_prune_backups($scfg->{'prune-backups'} // 'keep-all=1');
    activate_storage($cfg, $storeid);
    return plugin_of($scfg)->prune_backups($scfg, $storeid, $keep, $vmid, $type, $dryrun, $logfunc);
}

sub parse_prune_backups {
    my ($s) = @_;
    return { map { my ($k, $v) = split(/=/, $_, 2); ($k => $v) } split(/,/, $s) };
}

sub extract_vzdump_config {
    my ($cfg, $volid) = @_;
    my ($storeid, $volname) = parse_volume_id($volid);
    die "storage '$storeid' is no backup provider\n"
        if !storage_has_feature($cfg, $storeid, 'backup-provider');
    my $log = sub { print "\U$_[0]\E: $_[1]\n" };
    my $provider = new_backup_provider($cfg, $storeid, $log);
    return $provider->archive_get_guest_config($volname, $storeid);
}

# PVE's retention marking (Storage.pm): newest first; per rule, every period's newest entry
# not yet decided is kept, until the rule's count of periods is reached. Entries already
# marked (protected) are left alone; the rest are removed.
my $prune_mark = sub {
    my ($entries, $count, $id_func) = @_;
    return if !$count;
    my ($already, $new) = ({}, {});
    for my $e (@$entries) {
        $already->{ $id_func->($e->{ctime}) } = 1 if defined($e->{mark}) && $e->{mark} eq 'keep';
    }
    for my $e (@$entries) {
        my $id = $id_func->($e->{ctime});
        next if defined($e->{mark}) || $already->{$id};
        if (!$new->{$id}) {
            last if scalar(keys %$new) >= $count;
            $new->{$id} = 1;
            $e->{mark} = 'keep';
        } else {
            $e->{mark} = 'remove';
        }
    }
};

sub prune_mark_backup_group {
    my ($group, $keep) = @_;
    my @positive = grep { $_ ne 'keep-all' && $keep->{$_} > 0 } keys %$keep;
    if ($keep->{'keep-all'} || !@positive) {
        for my $e (@$group) {
            next if $e->{mark} && $e->{mark} ne 'remove';
            $e->{mark} = 'keep';
        }
        return;
    }
    my $list = [sort { $b->{ctime} <=> $a->{ctime} } @$group];
    my $fmt = sub { my ($f) = @_; sub { POSIX::strftime($f, localtime($_[0])) } };
    $prune_mark->($list, $keep->{'keep-last'}, sub { $_[0] });
    $prune_mark->($list, $keep->{'keep-hourly'}, $fmt->("%Y/%m/%d/%H"));
    $prune_mark->($list, $keep->{'keep-daily'}, $fmt->("%Y/%m/%d"));
    $prune_mark->($list, $keep->{'keep-weekly'}, $fmt->("%G/%V"));
    $prune_mark->($list, $keep->{'keep-monthly'}, $fmt->("%Y/%m"));
    $prune_mark->($list, $keep->{'keep-yearly'}, $fmt->("%Y"));
    $_->{mark} //= 'remove' for @$list;
}

1;
