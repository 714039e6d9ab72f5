# wuremote-script
# name: boot-info
# version: 2
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Reads the last boot time and every pending-reboot signal; changes nothing.
.DESCRIPTION
    The reboot handler compares boot times before and after a restart (as Ansible's
    win_reboot does) and needs to know whether a reboot is owed before the next step.
    With -RebootRequiredIfPending the result asks for a restart when one is pending, so that a
    chain of steps after it (_psrp_chain.ps1: the host lock's release at a host's end) stops there.
    pending_reboot lists only the signals that earn a restart (Get-WuPendingReboot);
    pending_file_rename is reported beside it and never earns one, since agents rewrite
    PendingFileRenameOperations at every boot.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [switch]$RebootRequiredIfPending,
    [string]$ResultMarker = ''
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'boot-info' -RunId $RunId

$os = Get-CimInstance -ClassName Win32_OperatingSystem
$facts = @{
    last_boot_utc       = $os.LastBootUpTime.ToUniversalTime().ToString('o')
    pending_reboot      = @(Get-WuPendingReboot)
    pending_file_rename = [bool](Test-WuPendingFileRename)
}
$asks = [bool]$RebootRequiredIfPending -and $facts.pending_reboot.Count -gt 0
Complete-WuStep -Step 'boot-info' -Status 'ok' -ExitCode 0 -Facts $facts -RebootRequired $asks -ResultMarker $ResultMarker
