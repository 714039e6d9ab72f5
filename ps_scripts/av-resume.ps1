# wuremote-script
# name: av-resume
# version: 1
# reboot: never
# timeout: 300
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Turns back on what av-pause turned off (from %ProgramData%\wuremote\failsafe\av.json),
    reads the state back and cancels the fail-safe task.
.DESCRIPTION
    Not opt-in itself: resuming is always allowed and does nothing when nothing is paused.
    The fail-safe task is removed only once everything was restored; otherwise it stays
    armed and the step fails.
.NOTES
    Exit codes: 0 restored (or nothing was paused), 1 something could not be restored (the
    fail-safe stays armed), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = ''
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'av-resume' -RunId $RunId
Assert-WuElevated -Step 'av-resume' -ResultMarker $ResultMarker

$statePath = Get-WuFailSafePath -Kind 'av'
$facts = @{ state = (Read-WuJsonFile -Path $statePath) }
if ($null -eq $facts['state']) {
    $cancelled = Unregister-WuFailSafe -Kind 'av'
    $facts['failsafe_cancelled'] = $cancelled
    Complete-WuStep -Step 'av-resume' -Status 'ok' -ExitCode 0 -Facts $facts -Messages @('nothing was paused by wuremote') -ResultMarker $ResultMarker
}
$changes = @(Restore-WuAvState -Reason 'av-resume')
$failed = @($changes | Where-Object -FilterScript { $_.PSObject.Properties.Name -contains 'error' -or ($_.PSObject.Properties.Name -contains 'exit_code' -and $_.exit_code -ne 0) })
if ($failed.Count -gt 0 -or (Test-Path -LiteralPath $statePath)) {
    Complete-WuStep -Step 'av-resume' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes -ResultMarker $ResultMarker `
        -Messages @('antivirus not fully restored; the fail-safe task stays armed and will retry at its deadline')
}
$facts['failsafe_cancelled'] = Unregister-WuFailSafe -Kind 'av'
Complete-WuStep -Step 'av-resume' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes -ResultMarker $ResultMarker
