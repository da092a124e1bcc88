package PVE::BackupProvider::Plugin::Base;

# Stand-in for pve-storage's PVE::BackupProvider::Plugin::Base (pve/sim only): the real one
# is the POD of the API and methods that die "implement me"; so is this.

use strict;
use warnings;

for my $m (qw(provider_name job_init job_cleanup backup_init backup_cleanup
    backup_container_prepare backup_container backup_get_mechanism backup_handle_log_file
    backup_vm_query_incremental backup_vm restore_get_mechanism archive_get_guest_config
    archive_get_firewall_config restore_vm_init restore_vm_cleanup restore_vm_volume_init
    restore_vm_volume_cleanup restore_container_init restore_container_cleanup))
{
    no strict 'refs';
    *{$m} = sub { die "implement me in subclass\n" };
}

1;
