# wuremote-script
# name: dism
# version: 1
# reboot: maybe
# timeout: 7200
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Repairs the component store: DISM /Online /Cleanup-Image /RestoreHealth, optionally from a
    repair source. Runs detached (detached-start) because it takes tens of minutes.
.DESCRIPTION
    Runs before sfc (Microsoft's order from Windows 8 / Server 2012: sfc repairs from the
    component store). Progress percentages from DISM's output go to status.json for the live
    view. 0x800F081F (source files not found) and 0x800F0906/0x800F0907 (could not download
    them, or policy forbids it) are reported as "needs a repair source": give -Source, e.g.
    'wim:D:\sources\install.wim:1' from media of the same build, or a mounted image folder.
.PARAMETER Source
    Repair source for /Source: wim:<path>:<index>, esd:<path>:<index>, or a folder. Empty: Windows Update.
.PARAMETER LimitAccess
    With -Source, do not also try Windows Update / WSUS (/LimitAccess). Default true.
.NOTES
    Exit codes: 0 healthy or repaired, 3010 repaired and a reboot is needed, 1 failed,
    4 refused: another servicing operation is running, 5 not elevated,
    6 needs a repair source (0x800F081F, 0x800F0906, 0x800F0907).
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidatePattern('^$|^((wim|esd):([A-Za-z]:)?[^":]+:\d{1,3}|[A-Za-z]:\\[^"]*|\\\\[^"]+)$')][string]$Source = '',
    [bool]$LimitAccess = $true,
    [ValidateRange(0, 1800)][int]$BusyWaitSeconds = 300
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'dism' -RunId $RunId
Assert-WuElevated -Step 'dism' -ResultMarker $ResultMarker

$NeedsSource = @{
    '0x800F081F' = 'source files not found: give a repair source (-Source wim:<install.wim>:<index> of the same build)'
    '0x800F0906' = 'source files could not be downloaded: the host cannot reach Windows Update for repair content; give a repair source or allow repair from Windows Update by policy'
    '0x800F0907' = 'policy forbids downloading repair content: give a repair source'
}
$facts = @{ source = $Source; limit_access = ($LimitAccess -and [bool]$Source) }

# DISM refuses to run beside another DISM; say so instead of failing late, after a bounded wait.
# TiWorker alone is not another operation (Wait-WuServicingIdle says why).
$busyWith = Wait-WuServicingIdle -ProcessName @('DismHost') -WaitSeconds $BusyWaitSeconds
if ($busyWith) {
    $facts['busy_processes'] = $busyWith
    Complete-WuStep -Step 'dism' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('another DISM is running; left alone (never stopped): try again when it ends')
}

if ($Source) {
    $sourcePath = $Source
    if ($Source -match '^(wim|esd):(.+):(\d{1,3})$') {
        $sourcePath = $Matches[2]
    }
    if (-not (Test-Path -LiteralPath $sourcePath)) {
        Complete-WuStep -Step 'dism' -Status 'failed' -ExitCode 6 -Facts $facts -ResultMarker $ResultMarker `
            -Messages @(('repair source {0} is not reachable from the host' -f $sourcePath))
    }
}

$arguments = @('/Online', '/Cleanup-Image', '/RestoreHealth', '/NoRestart', '/English')
if ($Source) {
    $arguments += ('/Source:{0}' -f $Source)
    if ($LimitAccess) {
        $arguments += '/LimitAccess'
    }
}

$onLine = {
    param([string]$Line)
    # DISM redraws its bar with carriage returns: the last percentage on the line is current.
    $found = [regex]::Matches($Line, '(\d{1,3}(?:\.\d)?)%')
    if ($found.Count -gt 0) {
        $percent = [int][math]::Floor([double]$found[$found.Count - 1].Groups[1].Value)
        Set-WuStepProgress -RunId $RunId -Step 'dism' -Percent ([math]::Min(99, $percent))
    }
}
$started = [DateTime]::UtcNow
$run = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'dism.exe') -ArgumentList $arguments -OnLine $onLine
$hex = ConvertTo-WuHexHResult -Code $run.ExitCode
$facts['exit_code'] = $run.ExitCode
$facts['hresult'] = $hex
$facts['duration_seconds'] = [int]([DateTime]::UtcNow - $started).TotalSeconds
$facts['output_tail'] = @($run.Output | Select-Object -Last 15)
$facts['needs_source'] = $NeedsSource.ContainsKey($hex)
$facts['corruption_repaired'] = [bool](($run.Output -join "`n") -match 'The restore operation completed successfully|The component store corruption was repaired')
$changes = @()
if ($facts['corruption_repaired']) {
    $changes = @([pscustomobject]@{ kind = 'component-store-repaired' })
}

if ($run.ExitCode -eq 0) {
    Complete-WuStep -Step 'dism' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes -ResultMarker $ResultMarker
}
if ($run.ExitCode -eq 3010) {
    Complete-WuStep -Step 'dism' -Status 'reboot-required' -ExitCode 3010 -Facts $facts -Changes $changes -RebootRequired $true `
        -Messages @('repaired; a reboot completes the repair') -ResultMarker $ResultMarker
}
if ($facts['needs_source']) {
    Complete-WuStep -Step 'dism' -Status 'failed' -ExitCode 6 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('needs a repair source ({0}): {1}' -f $hex, $NeedsSource[$hex]))
}
Complete-WuStep -Step 'dism' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
    -Messages @(('DISM RestoreHealth failed with {0}; see %SystemRoot%\Logs\DISM\dism.log' -f $hex))
