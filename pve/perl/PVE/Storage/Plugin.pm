package PVE::Storage::Plugin;

# Stand-in for pve-storage's PVE::Storage::Plugin (pve/sim only): just the pieces a
# backup-provider plugin inherits or PVE calls on it (PVE-BACKUP-PROVIDER.md §1). The real
# class is a SectionConfig with the schema, defaults for dir-like storages, and much more.

use strict;
use warnings;

our @COMMON_TAR_FLAGS = qw(
    -p --sparse --numeric-owner --acls --xattrs --xattrs-include=user.*
    --xattrs-include=security.capability --warning=no-file-ignored --warning=no-xattr-write
);

sub plugindata { return {}; }

sub storage_has_feature {
    my ($class, $feature) = @_;
    my $features = $class->plugindata()->{features} // {};
    return $features->{$feature} ? 1 : 0;
}

sub check_connection { return 1; }

sub new_backup_provider {
    my ($class) = @_;
    die "implement me if enabling the feature 'backup-provider' in plugindata()->{features}\n";
}

sub activate_storage {
    my ($class, $storeid, $scfg) = @_;
    die "storage '$storeid': the default activate_storage needs a path\n" if !$scfg->{path};
    return 1;
}

sub prune_backups {
    die "the default prune_backups only knows vzdump file names (not simulated)\n";
}

1;
