# wuremote-script
# name: sync-time
# version: 1
# reboot: never
# timeout: 180
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Starts the Windows Time service if needed and resynchronises the clock.
.DESCRIPTION
    A disabled w32time is set to Manual (trigger start, its Windows default) and the change
    recorded. A domain member's time configuration (NT5DS hierarchy) is never rewritten unless
    -Peer is given; a workgroup host keeps its configured source unless -Peer is given.
    Skew is measured against -ControllerUtc before and after (the controller measures too).
.PARAMETER ControllerUtc
    The controller's clock (ISO 8601, UTC) when it sent this call.
.PARAMETER Peer
    NTP peer list for w32tm /manualpeerlist (e.g. 'time.example.org,0x8'); empty keeps the configuration.
.PARAMETER MaxSkewSeconds
    Skew after the resync above which the step fails.
.NOTES
    Exit codes: 0 synchronised, 1 failed (resync refused or skew still too large), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [string]$ControllerUtc = '',
    [ValidatePattern('^$|^[A-Za-z0-9][A-Za-z0-9.:_,\-]*( [A-Za-z0-9][A-Za-z0-9.:_,\-]*)*$')][string]$Peer = '',
    [ValidateRange(1, 86400)][int]$MaxSkewSeconds = 120
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'sync-time' -RunId $RunId
Assert-WuElevated -Step 'sync-time' -ResultMarker $ResultMarker

$clock = [Diagnostics.Stopwatch]::StartNew()
$controller = $null
if ($ControllerUtc) {
    $controller = [DateTime]::Parse($ControllerUtc, [Globalization.CultureInfo]::InvariantCulture, [Globalization.DateTimeStyles]::RoundtripKind).ToUniversalTime()
}

function Get-Skew {
    <# Local clock minus the controller's clock advanced by the time this script has run, in seconds. #>
    [CmdletBinding()]
    param()
    if ($null -eq $controller) {
        return $null
    }
    [math]::Round(([DateTime]::UtcNow - $controller.Add($clock.Elapsed)).TotalSeconds, 1)
}

$changes = New-Object -TypeName System.Collections.Generic.List[object]
$messages = New-Object -TypeName System.Collections.Generic.List[string]
$w32tm = Get-WuSystemTool -Name 'w32tm.exe'
$skewBefore = Get-Skew
$facts = @{ skew_before_seconds = $skewBefore; peer = $Peer }

try {
    $services = Get-WuServiceTable
    if (-not $services.ContainsKey('w32time')) {
        Complete-WuStep -Step 'sync-time' -Status 'not-applicable' -ExitCode 2 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @('the Windows Time service is not installed on this host')
    }
    $startType = ConvertTo-WuStartType -Service $services['w32time']
    if ($startType -eq 'Disabled') {
        Set-WuServiceStartType -Name 'w32time' -StartType 'Manual' -Confirm:$false
        $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = 'w32time'; from = 'Disabled'; to = 'Manual' })
    }
    if ([string]$services['w32time'].State -ne 'Running') {
        Start-Service -Name 'w32time'
        (Get-Service -Name 'w32time').WaitForStatus('Running', (New-TimeSpan -Seconds 30))
        $changes.Add([pscustomobject]@{ kind = 'service-state'; name = 'w32time'; from = [string]$services['w32time'].State; to = 'Running' })
    }

    $computer = Get-CimInstance -ClassName Win32_ComputerSystem
    $facts['domain_member'] = [bool]$computer.PartOfDomain
    if ($Peer) {
        $config = Invoke-WuNative -FilePath $w32tm -ArgumentList @('/config', ('/manualpeerlist:{0}' -f $Peer), '/syncfromflags:manual', '/update')
        if ($config.ExitCode -ne 0) {
            throw ('w32tm /config failed with exit {0}: {1}' -f $config.ExitCode, ($config.Output -join ' '))
        }
        $changes.Add([pscustomobject]@{ kind = 'time-config'; peers = $Peer })
    }
    elseif ($facts['domain_member']) {
        $messages.Add('domain member: time configuration left to the domain hierarchy')
    }

    # /resync as Microsoft documents it (w32tm: /resync [/computer:] [/nowait] [/rediscover] [/soft]);
    # the /force often seen in scripts is not a documented switch.
    $resync = Invoke-WuNative -FilePath $w32tm -ArgumentList @('/resync')
    if ($resync.ExitCode -ne 0) {
        # 0x800705B4 (timeout) is common right after a service start: one more try.
        Start-Sleep -Seconds 5
        $resync = Invoke-WuNative -FilePath $w32tm -ArgumentList @('/resync')
    }
    $facts['resync_exit_code'] = $resync.ExitCode
    $facts['resync_output'] = @($resync.Output)
    $facts['skew_after_seconds'] = Get-Skew

    if ($resync.ExitCode -ne 0) {
        $messages.Add(('w32tm /resync failed (exit {0}); check the time source is reachable (UDP 123)' -f $resync.ExitCode))
        Complete-WuStep -Step 'sync-time' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
            -Messages $messages.ToArray() -ResultMarker $ResultMarker
    }
    if ($null -ne $facts['skew_after_seconds'] -and [math]::Abs($facts['skew_after_seconds']) -gt $MaxSkewSeconds) {
        $messages.Add(('clock still {0} s off the controller after resync (limit {1} s): the time source itself may be wrong' -f $facts['skew_after_seconds'], $MaxSkewSeconds))
        Complete-WuStep -Step 'sync-time' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
            -Messages $messages.ToArray() -ResultMarker $ResultMarker
    }
}
catch {
    $messages.Add(('sync-time failed: {0}' -f $_.Exception.Message))
    Complete-WuStep -Step 'sync-time' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
        -Messages $messages.ToArray() -ResultMarker $ResultMarker
}
Complete-WuStep -Step 'sync-time' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() `
    -Messages $messages.ToArray() -ResultMarker $ResultMarker
