# wuremote-script
# name: boot-info
# version: 1
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
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = ''
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'boot-info' -RunId $RunId

$os = Get-CimInstance -ClassName Win32_OperatingSystem
$signals = New-Object -TypeName System.Collections.Generic.List[string]
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
    $signals.Add('cbs-reboot-pending')
}
if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
    $signals.Add('wu-reboot-required')
}
$sessionManager = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager'
if ($sessionManager.PSObject.Properties.Name -contains 'PendingFileRenameOperations') {
    $signals.Add('pending-file-rename')
}
$active = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName').ComputerName
$pending = (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName').ComputerName
if ($active -ne $pending) {
    $signals.Add('pending-computer-rename')
}

$facts = @{
    last_boot_utc   = $os.LastBootUpTime.ToUniversalTime().ToString('o')
    pending_reboot  = @($signals)
}
Complete-WuStep -Step 'boot-info' -Status 'ok' -ExitCode 0 -Facts $facts -ResultMarker $ResultMarker
