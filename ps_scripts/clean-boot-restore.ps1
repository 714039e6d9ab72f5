# wuremote-script
# name: clean-boot-restore
# version: 1
# reboot: recommended
# timeout: 600
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Undoes clean-boot: puts back exactly the start types it recorded on the host, starts the
    automatic services that were running, and cancels the fail-safe task.
.DESCRIPTION
    Not opt-in itself: restoring is always allowed and does nothing when no clean boot is
    recorded. The fail-safe stays armed until every start type is back.
.NOTES
    Exit codes: 0 restored (or nothing recorded), 1 some start types could not be restored
    (fail-safe stays armed), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = ''
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'clean-boot-restore' -RunId $RunId
Assert-WuElevated -Step 'clean-boot-restore' -ResultMarker $ResultMarker

$statePath = Get-WuFailSafePath -Kind 'clean-boot'
$facts = @{ state = (Read-WuJsonFile -Path $statePath) }
if ($null -eq $facts['state']) {
    $facts['failsafe_cancelled'] = Unregister-WuFailSafe -Kind 'clean-boot'
    Complete-WuStep -Step 'clean-boot-restore' -Status 'ok' -ExitCode 0 -Facts $facts -Messages @('no clean boot recorded by wuremote') -ResultMarker $ResultMarker
}
$changes = @(Restore-WuStartTypes -Reason 'clean-boot-restore')
if (Test-Path -LiteralPath $statePath) {
    Complete-WuStep -Step 'clean-boot-restore' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes -ResultMarker $ResultMarker `
        -Messages @('some start types could not be restored; the fail-safe task stays armed (deadline or next start-up)')
}
$facts['failsafe_cancelled'] = Unregister-WuFailSafe -Kind 'clean-boot'
Complete-WuStep -Step 'clean-boot-restore' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes `
    -Messages @(('{0} start type(s) restored' -f @($facts['state'].services).Count)) -ResultMarker $ResultMarker
