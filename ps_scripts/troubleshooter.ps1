# wuremote-script
# name: troubleshooter
# version: 1
# reboot: maybe
# timeout: 900
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Runs the Windows Update troubleshooting pack unattended and reads its result report back.
.DESCRIPTION
    Uses %SystemRoot%\diagnostics\system\WindowsUpdate through the TroubleshootingPack module.
    Where the OS has retired the legacy troubleshooters (the pack or the module is gone), the
    step is "not applicable" with that reason. Root causes come from ResultReport.xml:
    Detected, Not Detected, Not Checked, Fixed, Not Fixed.
.NOTES
    Exit codes: 0 ran (facts.root_causes says what it found and fixed), 3010 ran and a reboot is
    pending afterwards, 1 failed, 2 not applicable (pack retired or absent), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = ''
)
# wuremote-prelude
$transcript = Start-WuTranscript -Step 'troubleshooter' -RunId $RunId
Assert-WuElevated -Step 'troubleshooter' -ResultMarker $ResultMarker

$pack = Join-Path -Path $env:SystemRoot -ChildPath 'diagnostics\system\WindowsUpdate'
$facts = @{ pack_path = $pack }
$hasModule = $null -ne (Get-Module -ListAvailable -Name 'TroubleshootingPack')
if (-not $hasModule -or -not (Test-Path -LiteralPath $pack)) {
    Complete-WuStep -Step 'troubleshooter' -Status 'not-applicable' -ExitCode 2 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('the Windows Update troubleshooting pack is not on this OS (retired or removed); use reset-components instead')
}

$reportFolder = Join-Path -Path (Split-Path -Parent $transcript) -ChildPath ('troubleshooter-{0}' -f [DateTime]::UtcNow.ToString('yyyyMMddTHHmmssZ'))
$null = New-Item -ItemType Directory -Path $reportFolder -Force
$facts['report_folder'] = $reportFolder
$pendingBefore = @(Get-WuPendingReboot)
try {
    Import-Module -Name 'TroubleshootingPack'
    $loaded = Get-TroubleshootingPack -Path $pack
    Invoke-TroubleshootingPack -Pack $loaded -Unattended -Result $reportFolder
}
catch {
    Complete-WuStep -Step 'troubleshooter' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('the troubleshooting pack failed: {0}' -f $_.Exception.Message))
}

$rootCauses = New-Object -TypeName System.Collections.Generic.List[object]
$reportPath = Join-Path -Path $reportFolder -ChildPath 'ResultReport.xml'
if (Test-Path -LiteralPath $reportPath) {
    [xml]$report = Get-Content -LiteralPath $reportPath -Raw
    foreach ($node in @($report.SelectNodes("//*[local-name()='RootCause']"))) {
        $status = $null
        foreach ($data in @($node.SelectNodes("*[local-name()='Data']"))) {
            if ($data.GetAttribute('id') -eq 'Status') {
                $status = $data.InnerText.Trim()
            }
        }
        $rootCauses.Add(@{ id = $node.GetAttribute('id'); name = $node.GetAttribute('name'); status = $status })
    }
}
$facts['root_causes'] = $rootCauses.ToArray()
$facts['report_found'] = Test-Path -LiteralPath $reportPath
$notFixed = @($rootCauses | Where-Object -FilterScript { $_.status -eq 'Not Fixed' -or $_.status -eq 'Detected' })
$messages = @()
if ($notFixed.Count -gt 0) {
    $messages += ('root causes left unfixed: {0}' -f (($notFixed | ForEach-Object -Process { $_.name }) -join '; '))
}
$newSignals = @(Get-WuPendingReboot | Where-Object -FilterScript { $pendingBefore -notcontains $_ })
$changes = @($rootCauses | Where-Object -FilterScript { $_.status -eq 'Fixed' } | ForEach-Object -Process {
        [pscustomobject]@{ kind = 'troubleshooter-fix'; name = $_.name }
    })
if ($newSignals.Count -gt 0) {
    Complete-WuStep -Step 'troubleshooter' -Status 'reboot-required' -ExitCode 3010 -Facts $facts -Changes $changes `
        -Messages $messages -RebootRequired $true -ResultMarker $ResultMarker
}
Complete-WuStep -Step 'troubleshooter' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes -Messages $messages -ResultMarker $ResultMarker
