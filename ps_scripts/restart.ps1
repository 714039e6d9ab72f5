# wuremote-script
# name: restart
# version: 2
# reboot: always
# timeout: 60
# idempotent: no
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Schedules a restart with a reason recorded in the System log, and returns the boot time
    before it so the controller can prove a fresh boot (as Ansible's win_reboot does).
.DESCRIPTION
    shutdown.exe /r /t <DelaySeconds> /d p:2:17 (planned, operating system: hotfix) /c <Reason>;
    the delay lets this call return before the connection drops.
    A shutdown already scheduled by someone else (1190, ERROR_SHUTDOWN_IS_SCHEDULED) may be hours
    away or a power-off, so it is aborted (shutdown /a) and ours issued once more, as Ansible's
    win_reboot does (ansible.windows plugins/plugin_utils/_reboot.py, _perform_reboot). Only a
    shutdown already in progress (1115, ERROR_SHUTDOWN_IN_PROGRESS) is waited on. Codes: Microsoft,
    "System Error Codes (1000-1299)".
.NOTES
    Exit codes: 0 restart scheduled, 1 failed, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidateLength(1, 500)][string]$Reason,
    [ValidateRange(2, 600)][int]$DelaySeconds = 5
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'restart' -RunId $RunId
Assert-WuElevated -Step 'restart' -ResultMarker $ResultMarker

$facts = @{
    last_boot_utc  = Get-WuLastBootUtc
    pending_reboot = @(Get-WuPendingReboot)
    delay_seconds  = $DelaySeconds
}
$comment = 'wuremote: {0}' -f ($Reason -replace '[\r\n]+', ' ')
$shutdown = Get-WuSystemTool -Name 'shutdown.exe'
$restartArguments = @('/r', '/t', [string]$DelaySeconds, '/d', 'p:2:17', '/c', $comment)
$changes = New-Object -TypeName System.Collections.Generic.List[object]
$run = Invoke-WuNative -FilePath $shutdown -ArgumentList $restartArguments
if ($run.ExitCode -eq 1190) {
    $abort = Invoke-WuNative -FilePath $shutdown -ArgumentList @('/a')
    $facts['abort_exit_code'] = $abort.ExitCode
    if ($abort.ExitCode -eq 0) {
        $changes.Add([pscustomobject]@{ kind = 'scheduled-shutdown-aborted' })
    }
    $run = Invoke-WuNative -FilePath $shutdown -ArgumentList $restartArguments
}
$facts['shutdown_exit_code'] = $run.ExitCode
if (@(0, 1115) -notcontains $run.ExitCode) {
    Complete-WuStep -Step 'restart' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() -ResultMarker $ResultMarker `
        -Messages @(('shutdown.exe refused the restart (exit {0}): {1}' -f $run.ExitCode, ($run.Output -join ' ')))
}
$messages = @(('restart in {0} s: {1}' -f $DelaySeconds, $comment))
if ($run.ExitCode -eq 1115) {
    $messages = @('a shutdown started by something else is already in progress (exit 1115); waiting for the host to come back')
}
else {
    $changes.Add([pscustomobject]@{ kind = 'restart-scheduled'; reason = $comment })
}
Complete-WuStep -Step 'restart' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() `
    -Messages $messages -RebootRequired $true -ResultMarker $ResultMarker
