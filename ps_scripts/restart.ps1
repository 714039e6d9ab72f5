# wuremote-script
# name: restart
# version: 1
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
    the delay lets this call return before the connection drops. A shutdown already scheduled
    (1190) or in progress (1115) counts as done.
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
$run = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'shutdown.exe') -ArgumentList @('/r', '/t', [string]$DelaySeconds, '/d', 'p:2:17', '/c', $comment)
$facts['shutdown_exit_code'] = $run.ExitCode
if (@(0, 1190, 1115) -notcontains $run.ExitCode) {
    Complete-WuStep -Step 'restart' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('shutdown.exe refused the restart (exit {0}): {1}' -f $run.ExitCode, ($run.Output -join ' ')))
}
$messages = @(('restart in {0} s: {1}' -f $DelaySeconds, $comment))
if ($run.ExitCode -ne 0) {
    $messages = @(('a shutdown was already scheduled or in progress (exit {0}); waiting for it' -f $run.ExitCode))
}
Complete-WuStep -Step 'restart' -Status 'ok' -ExitCode 0 -Facts $facts -Changes @([pscustomobject]@{ kind = 'restart-scheduled'; reason = $comment }) `
    -Messages $messages -RebootRequired $true -ResultMarker $ResultMarker
