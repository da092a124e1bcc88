package PVE::Storage::Custom::ProxborgPlugin;

# Proxmox VE storage plugin (backup-provider API, PVE 8.4+): `proxborg: <storeid>` in
# storage.cfg makes vzdump, the GUI's backup list, prune, notes/protection and `pct restore`
# use a proxborg repository, for containers (`directory`) and VMs (`file-handle`, with QEMU's
# dirty bitmaps: an incremental VM backup reads only the 4 MiB chunks written since the
# previous one and takes the rest from that archive), and `pct restore`/`qmrestore` from it.
#
# Everything runs the `proxborg` binary; the repository passphrase is in
# /etc/pve/priv/storage/<storeid>.pw (root-only) and reaches proxborg as
# PROXBORG_PASSPHRASE_FILE, never on argv.

use strict;
use warnings;

use Fcntl qw(O_WRONLY O_CREAT O_TRUNC);
use File::Path qw(make_path);
use File::Temp ();
use IPC::Open3 ();
use JSON::PP ();
use POSIX ();
use Symbol ();

use base qw(PVE::Storage::Plugin);

# The archive names this plugin makes and lists: `proxborg 100:`'s own ones
# (`dump-<vmid>-YYYY_MM_DD-HH_MM_SS`, or `<hostname>-<vmid>-...` with --hostname-in-name).
our $NAME_RE = qr/([A-Za-z0-9][A-Za-z0-9.\-]*-(\d+)-(\d{4})_(\d\d)_(\d\d)-(\d\d)_(\d\d)_(\d\d))/;

sub api { return 11; }

sub type { return 'proxborg'; }

sub plugindata {
    return {
        content => [{ backup => 1, none => 1 }, { backup => 1 }],
        features => { 'backup-provider' => 1 },
        'sensitive-properties' => { passphrase => 1 },
    };
}

sub properties {
    return {
        repo => {
            description => "proxborg repository: a directory or ssh://[user\@]host[:port]/path.",
            type => 'string',
        },
        passphrase => {
            description => "The proxborg repository passphrase (kept in /etc/pve/priv/storage).",
            type => 'string',
        },
    };
}

sub options {
    return {
        repo => { fixed => 1 },
        passphrase => { optional => 1 },
        content => { optional => 1 },
        'prune-backups' => { optional => 1 },
        'max-protected-backups' => { optional => 1 },
        disable => { optional => 1 },
        nodes => { optional => 1 },
    };
}

# ---- helpers --------------------------------------------------------------------------------

sub pve_root { return $ENV{PROXBORG_PVE_ROOT} || '/etc/pve'; }

sub passphrase_file {
    my ($storeid) = @_;
    return pve_root() . "/priv/storage/$storeid.pw";
}

sub proxborg_bin { return $ENV{PROXBORG_BIN} || '/usr/bin/proxborg'; }

sub run_dir { return $ENV{PROXBORG_PLUGIN_RUN_DIR} || '/run/proxborg-plugin'; }

# The environment proxborg needs for this storage: repository and passphrase file.
sub proxborg_env {
    my ($scfg, $storeid) = @_;
    my $env = { PROXBORG_REPO => $scfg->{repo} };
    my $pw = passphrase_file($storeid);
    $env->{PROXBORG_PASSPHRASE_FILE} = $pw if -f $pw;
    return $env;
}

# Runs proxborg; returns its stdout and adds its warning lines to @$warnings if given. Dies
# with one line: proxborg's own error line.
sub run_proxborg {
    my ($scfg, $storeid, $args, $stdin, $warnings) = @_;
    my $env = proxborg_env($scfg, $storeid);
    local @ENV{ keys %$env } = values %$env;
    my $err = File::Temp->new();
    my ($in, $out) = (Symbol::gensym(), Symbol::gensym());
    my $pid = eval { IPC::Open3::open3($in, $out, ">&" . fileno($err), proxborg_bin(), @$args) };
    die "proxborg: cannot run " . proxborg_bin() . ": $@" if !$pid;
    print $in $stdin if defined($stdin);
    close($in);
    my $stdout = do { local $/; <$out> } // '';
    close($out);
    waitpid($pid, 0);
    my $rc = $? >> 8;
    seek($err, 0, 0);
    my @lines = grep { /\S/ } <$err>;
    chomp @lines;
    if ($? != 0 && $rc != 1) {    # 1: finished with warnings
        my $msg = @lines ? $lines[-1] : "exit code $rc";
        $msg =~ s/^proxborg: (error: )?//;
        die "proxborg $args->[0] failed: $msg\n";
    }
    push @$warnings, map { s/^proxborg: warning: //r } grep { /^proxborg: warning: / } @lines
        if $warnings;
    return $stdout;
}

sub parse_name {
    my ($volname) = @_;
    return if !defined($volname) || $volname !~ m!^backup/$NAME_RE$!;
    my ($name, $vmid, @t) = ($1, $2, $3, $4, $5, $6, $7, $8);
    my $ctime = POSIX::mktime($t[5], $t[4], $t[3], $t[2], $t[1] - 1, $t[0] - 1900, 0, 0, -1);
    return ($name, $vmid, $ctime);
}

# The guest archives of the repository this plugin can offer: name => manifest.
sub archives {
    my ($scfg, $storeid) = @_;
    my $list = JSON::PP::decode_json(run_proxborg($scfg, $storeid, ['list', '--json']));
    my $res = {};
    for my $m (@$list) {
        my $meta = $m->{metadata} // {};
        next if ($meta->{kind} // '') !~ /^(lxc|qemu)$/ || !defined($meta->{vmid});
        next if "backup/$m->{name}" !~ m!^backup/$NAME_RE$!;
        $res->{ $m->{name} } = $m;
    }
    return $res;
}

sub archive_of {
    my ($scfg, $storeid, $volname) = @_;
    my ($name) = parse_name($volname) or die "unable to parse proxborg volume name '$volname'\n";
    my $m = archives($scfg, $storeid)->{$name} or die "proxborg archive '$name' not found\n";
    return ($name, $m);
}

# ---- storage ---------------------------------------------------------------------------------

sub write_passphrase {
    my ($storeid, $passphrase) = @_;
    my $file = passphrase_file($storeid);
    make_path(pve_root() . "/priv/storage", { mode => 0700 });
    sysopen(my $fh, "$file.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0600)
        or die "writing $file: $!\n";
    print $fh $passphrase or die "writing $file: $!\n";
    close($fh) or die "writing $file: $!\n";
    rename("$file.tmp", $file) or die "writing $file: $!\n";
}

sub on_add_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    write_passphrase($storeid, $sensitive{passphrase}) if defined($sensitive{passphrase});
    return;
}

sub on_update_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    if (exists($sensitive{passphrase})) {
        if (defined($sensitive{passphrase})) {
            write_passphrase($storeid, $sensitive{passphrase});
        } else {
            unlink(passphrase_file($storeid));
        }
    }
    return;
}

sub on_delete_hook {
    my ($class, $storeid, $scfg) = @_;
    unlink(passphrase_file($storeid));
    return;
}

sub check_connection { return 1; }

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    my $repo = $scfg->{repo} // die "storage '$storeid': no repo configured\n";
    # A directory must exist; ssh:// and s3: URLs are checked by proxborg when it connects.
    if ($repo =~ m!^/! && !-d $repo) {
        die "storage '$storeid': repository directory '$repo' does not exist\n";
    }
    die "storage '$storeid': " . proxborg_bin() . " is not installed\n" if !-x proxborg_bin();
    return 1;
}

sub deactivate_storage { return 1; }

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    my $repo = $scfg->{repo} // '';
    return (0, 0, 0, 1) if $repo =~ m!^ssh://! || !-d $repo;
    my $df = `df -P -B1 -- \Q$repo\E 2>/dev/null`;
    my (undef, $line) = split(/\n/, $df);
    my (undef, $total, $used, $free) = split(/\s+/, $line // '');
    return (($total // 0) + 0, ($free // 0) + 0, ($used // 0) + 0, 1);
}

sub parse_volname {
    my ($class, $volname) = @_;
    my ($name, $vmid) = parse_name($volname);
    die "unable to parse proxborg volume name '$volname'\n" if !defined($name);
    return ('backup', $name, $vmid, undef, undef, undef, 'proxborg-archive');
}

# Never dies: the content API calls it for every volume.
sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    my ($name, $vmid) = eval { parse_name($volname) };
    $name //= $volname // '';
    return ("proxborg://" . ($scfg->{repo} // '') . "::$name", $vmid, 'backup');
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    my ($name) = parse_name($volname) or die "unable to parse proxborg volume name '$volname'\n";
    run_proxborg($scfg, $storeid, ['delete', $name]);
    return;
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my (undef, $m) = archive_of($scfg, $storeid, $volname);
    my $size = $m->{stats}->{original_size} // 0;
    return wantarray ? ($size, 'proxborg-archive', 0, undef, undef) : $size;
}

sub list_volumes {
    my ($class, $storeid, $scfg, $vmid, $content_types) = @_;
    return [] if !grep { $_ eq 'backup' } @{ $content_types // ['backup'] };
    my $archives = archives($scfg, $storeid);
    return [] if !%$archives;
    # The whole repository is encrypted or not; the GUI shows a lock for a true value.
    my $info = JSON::PP::decode_json(run_proxborg($scfg, $storeid, ['info', '--json']));
    my $enc = $info->{encryption} // 'none';
    my $res = [];
    for my $name (sort keys %$archives) {
        my $m = $archives->{$name};
        my (undef, $owner, $ctime) = parse_name("backup/$name");
        next if defined($vmid) && $owner != $vmid;
        push @$res, {
            volid => "$storeid:backup/$name",
            vmid => $owner + 0,
            ctime => $ctime,
            size => ($m->{stats}->{original_size} // 0) + 0,
            format => 'proxborg-archive',
            content => 'backup',
            subtype => $m->{metadata}->{kind},
            notes => $m->{notes} // '',
            protected => $m->{protected} ? 1 : 0,
            encrypted => $enc ne 'none' ? "proxborg $enc" : undef,
        };
    }
    return $res;
}

sub get_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute) = @_;
    return if $attribute ne 'notes' && $attribute ne 'protected';
    my (undef, $m) = archive_of($scfg, $storeid, $volname);
    return $m->{notes} // '' if $attribute eq 'notes';
    return $m->{protected} ? 1 : 0;
}

sub update_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute, $value) = @_;
    my ($name) = parse_name($volname) or die "unable to parse proxborg volume name '$volname'\n";
    if ($attribute eq 'notes') {
        run_proxborg($scfg, $storeid, ['archive', 'note', $name, '-'], $value // '');
    } elsif ($attribute eq 'protected') {
        run_proxborg($scfg, $storeid, ['archive', $value ? 'protect' : 'unprotect', $name]);
    } else {
        die "attribute '$attribute' is not supported for storage type 'proxborg'\n";
    }
    return;
}

sub prune_backups {
    my ($class, $scfg, $storeid, $keep, $vmid, $type, $dryrun, $logfunc) = @_;
    $logfunc //= sub { print "$_[1]\n" };
    my $groups = {};
    for my $v (@{ $class->list_volumes($storeid, $scfg, $vmid, ['backup']) }) {
        next if defined($type) && $v->{subtype} ne $type;
        push @{ $groups->{ $v->{vmid} } }, {
            volid => $v->{volid},
            ctime => $v->{ctime},
            type => $v->{subtype},
            vmid => $v->{vmid},
            ($v->{protected} ? (mark => 'protected') : ()),
        };
    }
    my $prune_list = [];
    my $failed;
    for my $id (sort { $a <=> $b } keys %$groups) {
        PVE::Storage::prune_mark_backup_group($groups->{$id}, $keep);
        for my $e (@{ $groups->{$id} }) {
            push @$prune_list, $e;
            next if $dryrun || $e->{mark} ne 'remove';
            my (undef, $volname) = split(/:/, $e->{volid}, 2);
            eval { $class->free_image($storeid, $scfg, $volname) };
            if (my $err = $@) {
                chomp $err;
                $logfunc->('err', "error when removing backup '$e->{volid}' - $err");
                $failed = 1;
            } else {
                $logfunc->('info', "removed backup '$e->{volid}'");
            }
        }
    }
    die "error pruning backups - check log\n" if $failed;
    return $prune_list;
}

sub new_backup_provider {
    my ($class, $scfg, $storeid, $log_function) = @_;
    return PVE::BackupProvider::Plugin::Proxborg->new($class, $scfg, $storeid, $log_function);
}

# ===============================================================================================
package PVE::BackupProvider::Plugin::Proxborg;

# The provider object vzdump and the restore paths call (PVE-BACKUP-PROVIDER.md §2, §3).
#
# Where the backup runs: backup_container() runs in a child forked into the container's user
# namespace as the mapped root (host uid 100000 for the default map). That process cannot
# open the root-only passphrase file nor write a root-owned repository. So the work is done
# by a root helper forked in backup_container_prepare(), which runs as host root in vzdump's
# worker, inside the worker's private mount namespace, and therefore sees the snapshot tree
# at /mnt/vzsnap0 itself. backup_container() only hands the helper what prepare() does not
# get (the guest config and the exclude list) over a pipe created in prepare() and inherited
# across the fork, and waits on a second pipe for the helper's one-line result. A pipe needs
# no permission check, so this works the same for privileged containers (called in-process)
# and for any id map. The helper's result (archive size) also lands in a root-only run
# directory, where backup_cleanup() reads it; $self changes made in the child are lost.

use strict;
use warnings;

use File::Path qw(make_path remove_tree);
use File::Temp ();
use IO::Handle;
use JSON::PP ();
use POSIX ();

our @ISA;
BEGIN {
    if (eval { require PVE::BackupProvider::Plugin::Base; 1 }) {
        @ISA = ('PVE::BackupProvider::Plugin::Base');
    }
}

sub new {
    my ($class, $storage_plugin, $scfg, $storeid, $log_function) = @_;
    return bless {
        plugin => $storage_plugin,
        scfg => $scfg,
        storeid => $storeid,
        log => $log_function // sub { print STDERR uc($_[0]) . ": $_[1]\n" },
        job => {},
    }, $class;
}

sub provider_name { return 'proxborg'; }

sub log { my ($self, $level, $msg) = @_; $self->{log}->($level, $msg); }

sub job_init {
    my ($self, $start_time) = @_;
    $self->{'start-time'} = $start_time;
    my $bin = PVE::Storage::Custom::ProxborgPlugin::proxborg_bin();
    die "proxborg binary $bin is not installed\n" if !-x $bin;
    return;
}

sub job_cleanup { return; }

sub backup_init {
    my ($self, $vmid, $vmtype, $backup_time) = @_;
    die "proxborg: cannot back up guests of type '$vmtype'\n" if $vmtype !~ /^(lxc|qemu)$/;
    my $name = "dump-$vmid-" . POSIX::strftime("%Y_%m_%d-%H_%M_%S", localtime($backup_time));
    $self->{job}->{$vmid} = { 'archive-name' => $name };
    return { 'archive-name' => $name };
}

sub backup_get_mechanism {
    my ($self, $vmid, $vmtype) = @_;
    return 'directory' if $vmtype eq 'lxc';
    return 'file-handle' if $vmtype eq 'qemu';
    die "proxborg: cannot back up guests of type '$vmtype'\n";
}

sub backup_container_prepare {
    my ($self, $vmid, $info) = @_;
    my $job = $self->{job}->{$vmid} // die "backup_container_prepare: no backup_init for $vmid\n";
    my $base = PVE::Storage::Custom::ProxborgPlugin::run_dir();
    make_path($base, { mode => 0700 });
    my $dir = File::Temp::tempdir("backup-$vmid-XXXXXX", DIR => $base);
    chmod(0700, $dir);
    pipe(my $req_r, my $req_w) or die "pipe: $!\n";
    pipe(my $res_r, my $res_w) or die "pipe: $!\n";
    $req_w->autoflush(1);
    $res_w->autoflush(1);
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        close($req_w);
        close($res_r);
        my $code = 0;
        eval { $self->helper($vmid, $info, $job->{'archive-name'}, $dir, $req_r, $res_w) };
        if (my $err = $@) {
            chomp $err;
            print $res_w JSON::PP::encode_json({ ok => 0, error => $err }) . "\n";
            $code = 1;
        }
        close($res_w);
        POSIX::_exit($code);
    }
    close($req_r);
    close($res_w);
    @$job{qw(helper dir req res)} = ($pid, $dir, $req_w, $res_r);
    return;
}

# The job's bandwidth limit (PVE hands bytes/s, proxborg takes KiB/s): `--bwlimit N`, logged.
sub bwlimit_args {
    my ($self, $info) = @_;
    my $bps = $info->{'bandwidth-limit'} or return ();
    my $kib = int(($bps + 1023) / 1024);
    $self->log('info', "bandwidth limit: $kib KiB/s");
    return ('--bwlimit', $kib);
}

# Root helper: wait for the request line, run proxborg, answer with one line.
sub helper {
    my ($self, $vmid, $info, $name, $dir, $req_r, $res_w) = @_;
    my $line = <$req_r>;
    return if !defined($line);    # backup_container never ran: nothing to do
    my $req = JSON::PP::decode_json($line);
    my $write = sub {
        my ($file, $text) = @_;
        open(my $fh, '>', "$dir/$file") or die "writing $dir/$file: $!\n";
        print $fh $text;
        close($fh) or die "writing $dir/$file: $!\n";
    };
    $write->('pct.conf', $req->{config} // '');
    $write->('pct.fw', $info->{'firewall-config'} // '');
    my @args = ('pve-container-archive', $name, '--json', '--vmid', $vmid,
        '--directory', $info->{directory}, '--config', "$dir/pct.conf",
        '--firewall', "$dir/pct.fw");
    push @args, map { ('--source', $_) } @{ $info->{sources} };
    push @args, map { "--exclude=$_" } @{ $req->{excludes} // [] };
    push @args, $self->bwlimit_args($info);
    $self->log('info', "creating proxborg archive '$name' from $info->{directory}");
    my $warnings = [];
    my $out = PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
        $self->{scfg}, $self->{storeid}, \@args, undef, $warnings);
    $self->log('warn', $_) for @$warnings;    # each one counts as a task warning
    my $r = JSON::PP::decode_json($out);
    my $result = { ok => 1, size => $r->{size} // 0, added => $r->{added} // 0 };
    $write->('result.json', JSON::PP::encode_json($result));
    print $res_w JSON::PP::encode_json($result) . "\n";
    return;
}

sub backup_container {
    my ($self, $vmid, $guest_config, $exclude_patterns, $info) = @_;
    my $job = $self->{job}->{$vmid} // die "backup_container: no backup_container_prepare\n";
    my ($req_w, $res_r) = @$job{qw(req res)};
    local $SIG{PIPE} = 'IGNORE';    # a dead helper is an error message, not a silent kill
    print $req_w JSON::PP::encode_json({ config => $guest_config, excludes => $exclude_patterns })
        . "\n" or die "proxborg helper is gone: $!\n";
    my $line = <$res_r>;
    die "proxborg helper ended without a result\n" if !defined($line);
    my $res = JSON::PP::decode_json($line);
    die "$res->{error}\n" if !$res->{ok};
    return;
}

sub backup_cleanup {
    my ($self, $vmid, $vmtype, $success, $info) = @_;
    my $job = $self->{job}->{$vmid} or return { stats => { 'archive-size' => 0 } };
    if ($job->{req}) {
        close($job->{req});    # an idle helper sees EOF and ends
        delete $job->{req};
    }
    waitpid($job->{helper}, 0) if $job->{helper};
    delete $job->{helper};
    my $result = $job->{result} // {};    # a VM's: backup_vm ran in this process
    if ($job->{dir} && open(my $fh, '<', "$job->{dir}/result.json")) {
        $result = eval { JSON::PP::decode_json(do { local $/; <$fh> }) } // {};
    }
    remove_tree($job->{dir}) if $job->{dir};
    delete $job->{dir};
    if (!$success && $result->{ok}) {
        # The archive exists but the job failed after it (e.g. setting protection): do not
        # leave a backup PVE reported as failed. A VM's next backup must then read everything
        # (QEMU may already have cleared its bitmap), so the archive stops being its base.
        unlink(last_archive_file($self->{storeid}, $vmid)) if $vmtype && $vmtype eq 'qemu';
        eval {
            PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
                $self->{scfg}, $self->{storeid}, ['delete', $job->{'archive-name'}]);
        };
        $self->log('warn', "removing archive '$job->{'archive-name'}' failed: $@") if $@;
    }
    return { stats => { 'archive-size' => ($result->{size} // 0) + 0 } };
}

# Never dies: vzdump calls it outside any eval. The log stays where vzdump wrote it.
sub backup_handle_log_file {
    my ($self, $vmid, $filename) = @_;
    eval { $self->log('info', "task log for $vmid: $filename (kept on the node)") };
    return;
}

# ---- VMs (PVE-BACKUP-PROVIDER.md §2.4, file-handle) -----------------------------------------
#
# QEMU keeps one dirty bitmap per drive and storage, only in the running process; it is cleared
# when a backup_vm to this storage returned. So the base of an incremental backup is exactly
# the archive the last successful backup_vm of this VM to this storage committed: its name is
# kept in the run directory (/run: gone at reboot, as the bitmaps are). `use` is answered only
# when that archive is still there, readable, and holds the drive with the same size;
# anything else is `new`, and proxborg reads the whole drive.

sub last_archive_file {
    my ($storeid, $vmid) = @_;
    return PVE::Storage::Custom::ProxborgPlugin::run_dir() . "/last-$storeid-$vmid";
}

# The drives of archive $name as its manifest records them (the figures proxborg writes for each
# drive-<dev>.raw entry): { 'drive-scsi0' => size }; undef if the archive is not listed (gone,
# or its manifest does not read). Metadata only: listing the entries themselves would fetch
# their content. proxborg checks the entry itself again before reusing its chunks.
sub archive_drives {
    my ($self, $name) = @_;
    my $m = eval {
        PVE::Storage::Custom::ProxborgPlugin::archives($self->{scfg}, $self->{storeid})->{$name}
    } or return;
    return if ($m->{metadata}->{kind} // '') ne 'qemu';
    return { map { ($_->{name} => $_->{size}) } @{ $m->{metadata}->{drives} // [] } };
}

sub backup_vm_query_incremental {
    my ($self, $vmid, $volumes) = @_;
    my $job = $self->{job}->{$vmid} // die "backup_vm_query_incremental: no backup_init for $vmid\n";
    my ($previous, $drives);
    if (open(my $fh, '<', last_archive_file($self->{storeid}, $vmid))) {
        $previous = <$fh>;
        chomp $previous if defined($previous);
        $drives = $self->archive_drives($previous) if $previous;
    }
    my $res = {};
    for my $dev (sort keys %$volumes) {
        my $size = $volumes->{$dev}->{size};
        my $ok = $drives && defined($drives->{$dev}) && $drives->{$dev} == $size;
        $res->{$dev} = $ok ? 'use' : 'new';
    }
    if (grep { $_ eq 'use' } values %$res) {
        $job->{previous} = $previous;
        $self->log('info', "incremental backup based on proxborg archive '$previous'");
    }
    return $res;
}

sub backup_vm {
    my ($self, $vmid, $guest_config, $volumes, $info) = @_;
    my $job = $self->{job}->{$vmid} // die "backup_vm: no backup_init for $vmid\n";
    my $name = $job->{'archive-name'};
    my $base = PVE::Storage::Custom::ProxborgPlugin::run_dir();
    make_path($base, { mode => 0700 });
    my $dir = File::Temp::tempdir("backup-$vmid-XXXXXX", DIR => $base);
    chmod(0700, $dir);
    $job->{dir} = $dir;    # backup_cleanup removes it
    my $write = sub {
        my ($file, $text) = @_;
        open(my $fh, '>', "$dir/$file") or die "writing $dir/$file: $!\n";
        print $fh $text;
        close($fh) or die "writing $dir/$file: $!\n";
        return "$dir/$file";
    };
    my @args = ('pve-vm-archive', $name, '--json', '--vmid', $vmid,
        '--config', $write->('qemu-server.conf', $guest_config));
    push @args, '--firewall', $write->('qemu-server.fw', $info->{'firewall-config'})
        if defined($info->{'firewall-config'});
    my $incremental;
    for my $dev (sort keys %$volumes) {
        my $vol = $volumes->{$dev};
        my $fh = $vol->{'file-handle'} // die "proxborg: no file handle for $dev\n";
        # the handle PVE opened (on its nbdfuse file), reopened by proxborg through /proc
        my $spec = "$dev=/proc/$$/fd/" . fileno($fh) . ",size=$vol->{size}";
        if (($vol->{'bitmap-mode'} // '') eq 'reuse' && $job->{previous}) {
            my $regions = '';
            my ($n, $bytes) = (0, 0);
            while (my ($off, $len) = $vol->{'next-dirty-region'}->()) {
                $regions .= "$off $len\n";
                $n++;
                $bytes += $len;
            }
            $spec .= ",dirty=" . $write->("dirty-$dev", $regions);
            $incremental = 1;
            $self->log('info', "$dev: $n dirty regions ($bytes bytes) since '$job->{previous}'");
        } else {
            $self->log('info', "$dev: reading all of it (bitmap "
                . ($vol->{'bitmap-mode'} // 'none') . ")");
        }
        push @args, '--drive', $spec;
    }
    push @args, '--previous', $job->{previous} if $incremental;
    push @args, $self->bwlimit_args($info);
    my $warnings = [];
    my $out = PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
        $self->{scfg}, $self->{storeid}, \@args, undef, $warnings);
    $self->log('warn', $_) for @$warnings;
    my $r = JSON::PP::decode_json($out);
    for my $d (@{ $r->{drives} // [] }) {
        $self->log('info', "$d->{name}: read $d->{read} of $d->{size} bytes, $d->{new} new");
    }
    $job->{result} = { ok => 1, size => $r->{size} // 0 };
    # committed: the next incremental backup of this VM to this storage builds on it
    open(my $fh, '>', last_archive_file($self->{storeid}, $vmid) . ".tmp")
        or die "writing the run directory: $!\n";
    print $fh "$name\n";
    close($fh);
    rename(last_archive_file($self->{storeid}, $vmid) . ".tmp",
        last_archive_file($self->{storeid}, $vmid));
    return;
}

sub extract_file {
    my ($self, $volname, $path) = @_;
    my ($name) = PVE::Storage::Custom::ProxborgPlugin::parse_name($volname)
        or die "unable to parse proxborg volume name '$volname'\n";
    return PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
        $self->{scfg}, $self->{storeid}, ['extract', $name, $path, '--stdout']);
}

sub guest_type {
    my ($self, $volname) = @_;
    my (undef, $m) = PVE::Storage::Custom::ProxborgPlugin::archive_of(
        $self->{scfg}, $self->{storeid}, $volname);
    return $m->{metadata}->{kind};
}

sub archive_get_guest_config {
    my ($self, $volname, $storeid) = @_;
    my $file = $self->guest_type($volname) eq 'qemu' ? 'qemu-server.conf' : 'etc/vzdump/pct.conf';
    return $self->extract_file($volname, $file);
}

sub archive_get_firewall_config {
    my ($self, $volname, $storeid) = @_;
    my $fw;
    if ($self->guest_type($volname) eq 'qemu') {
        # vzdump stores qemu-server.fw only when the VM has one
        my ($name) = PVE::Storage::Custom::ProxborgPlugin::parse_name($volname);
        my $out = PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
            $self->{scfg}, $self->{storeid}, ['list', $name, 'qemu-server.fw', '--json']);
        return if $out !~ /\S/;
        $fw = $self->extract_file($volname, 'qemu-server.fw');
    } else {
        $fw = $self->extract_file($volname, 'etc/vzdump/pct.fw');
    }
    return length($fw) ? $fw : undef;
}

sub restore_get_mechanism {
    my ($self, $volname, $storeid) = @_;
    return $self->guest_type($volname) eq 'qemu' ? ('qemu-img', 'qemu') : ('directory', 'lxc');
}

sub restore_mountpoint {
    my ($self, $volname) = @_;
    my ($name) = PVE::Storage::Custom::ProxborgPlugin::parse_name($volname)
        or die "unable to parse proxborg volume name '$volname'\n";
    return (PVE::Storage::Custom::ProxborgPlugin::run_dir() . "/restore-$name.$$", $name);
}

sub restore_container_init {
    my ($self, $volname, $storeid, $info) = @_;
    return { 'archive-directory' => $self->mount_archive($volname) };
}

# `proxborg mount` of the archive in the background, until it is mounted; its mountpoint.
sub mount_archive {
    my ($self, $volname) = @_;
    my ($mnt, $name) = $self->restore_mountpoint($volname);
    make_path($mnt, { mode => 0700 });
    my $env = PVE::Storage::Custom::ProxborgPlugin::proxborg_env($self->{scfg}, $self->{storeid});
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        @ENV{ keys %$env } = values %$env;
        POSIX::setsid();
        open(STDIN, '<', '/dev/null');
        { exec(PVE::Storage::Custom::ProxborgPlugin::proxborg_bin(), "mount", $name, $mnt) };
        POSIX::_exit(127);
    }
    $self->{restore}->{$volname} = { pid => $pid, mnt => $mnt };
    for (1 .. 600) {
        return $mnt if is_mounted($mnt);
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            die "proxborg mount of '$name' failed (exit code " . ($? >> 8) . ")\n";
        }
        select(undef, undef, undef, 0.1);
    }
    kill('TERM', $pid);
    die "proxborg mount of '$name' did not come up within 60 s\n";
}

sub is_mounted {
    my ($path) = @_;
    open(my $fh, '<', '/proc/self/mountinfo') or return 0;
    while (my $l = <$fh>) {
        my $mp = (split(/ /, $l))[4];
        $mp =~ s/\\([0-7]{3})/chr(oct($1))/ge;
        return 1 if $mp eq $path;
    }
    return 0;
}

sub restore_container_cleanup {
    my ($self, $volname, $storeid, $info) = @_;
    $self->unmount_archive($volname);
    return;
}

sub unmount_archive {
    my ($self, $volname) = @_;
    my $r = delete($self->{restore}->{$volname}) // {};
    my $mnt = $r->{mnt} // ($self->restore_mountpoint($volname))[0];
    if (is_mounted($mnt)) {
        eval {
            PVE::Storage::Custom::ProxborgPlugin::run_proxborg(
                $self->{scfg}, $self->{storeid}, ['umount', $mnt]);
        };
        if (my $err = $@) {
            system('umount', '-l', $mnt);
            die $err if is_mounted($mnt);
        }
    }
    waitpid($r->{pid}, 0) if $r->{pid};
    rmdir($mnt);
    return;
}

# qmrestore (§3.2): the drive images inside a `proxborg mount` of the archive, read by
# PVE's `qemu-img convert -f raw` (a FUSE file is random-access and passes its `-f` test).
sub restore_vm_init {
    my ($self, $volname, $info) = @_;
    my $mnt = $self->mount_archive($volname);
    my $res = {};
    opendir(my $dh, $mnt) or die "reading $mnt: $!\n";
    for my $f (readdir($dh)) {
        next if $f !~ /^(drive-[A-Za-z0-9-]+)\.raw$/;
        $res->{$1} = { size => -s "$mnt/$f" };
    }
    closedir($dh);
    return $res;
}

sub restore_vm_volume_init {
    my ($self, $volname, $devname, $info) = @_;
    my $r = $self->{restore}->{$volname} // die "restore_vm_volume_init: no restore_vm_init\n";
    my $p = "$r->{mnt}/$devname.raw";
    die "proxborg archive has no drive '$devname'\n" if !-f $p;
    return { 'qemu-img-path' => $p };
}

sub restore_vm_volume_cleanup { return; }

sub restore_vm_cleanup {
    my ($self, $volname, $info) = @_;
    $self->unmount_archive($volname);
    return;
}

1;
