# wuremote-script
# name: sfc
# version: 1
# reboot: maybe
# timeout: 3600
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    sfc /scannow, judged by its exit code and the [SR] lines it adds to CBS.log. Runs detached.
.DESCRIPTION
    sfc writes UTF-16LE to its console and its wording is localised, so the verdict comes from
    the [SR] lines appended to %SystemRoot%\Logs\CBS\CBS.log during this run (read with
    sharing, since TrustedInstaller holds it open):
      "Cannot repair member file"            corruption sfc could not repair: run dism first
      "Repairing corrupted file" / "Repaired" corruption repaired
      "Verify complete" and neither of those no integrity violations
    The console output is decoded as UTF-16 only to report percent done.
.NOTES
    Exit codes: 0 no violations or all repaired, 3010 repaired and a reboot is pending,
    1 failed (sfc did not run or wrote no [SR] lines), 4 refused: a servicing operation is
    pending or running, 5 not elevated, 6 corruption sfc could not repair (run dism, then sfc).
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateRange(0, 1800)][int]$BusyWaitSeconds = 300
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'sfc' -RunId $RunId
Assert-WuElevated -Step 'sfc' -ResultMarker $ResultMarker

$cbsLog = Join-Path -Path $env:SystemRoot -ChildPath 'Logs\CBS\CBS.log'
$facts = @{ cbs_log = $cbsLog }

if (Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')) {
    Complete-WuStep -Step 'sfc' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('a system repair is pending a reboot (pending.xml): reboot, then run sfc')
}
# Another sfc or a DISM at work, after a bounded wait; TiWorker alone is not busy (Wait-WuServicingIdle).
$busyWith = Wait-WuServicingIdle -ProcessName @('sfc', 'DismHost') -WaitSeconds $BusyWaitSeconds
if ($busyWith) {
    Complete-WuStep -Step 'sfc' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('another sfc or DISM is running ({0}); left alone (never stopped)' -f $busyWith))
}

function Get-FileLength {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) {
        return [long]0
    }
    (Get-Item -LiteralPath $Path).Length
}

function Read-LogFrom {
    <# Text of a log from a byte offset, opened with sharing (another process writes it). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][long]$Offset
    )
    $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
    try {
        if ($Offset -gt $stream.Length) {
            # The log was rotated into CbsPersist_*.log during the run: read the new one whole.
            $Offset = 0
        }
        $null = $stream.Seek($Offset, [System.IO.SeekOrigin]::Begin)
        $reader = New-Object -TypeName System.IO.StreamReader -ArgumentList @($stream, [System.Text.Encoding]::UTF8)
        $reader.ReadToEnd()
    }
    finally {
        $stream.Dispose()
    }
}

$offset = Get-FileLength -Path $cbsLog
$pendingBefore = @(Get-WuPendingReboot)
# A file rename that appears while sfc repairs is sfc's own (files in use are replaced at the next
# start): it earns this step's 3010, though a rename alone never earns a restart elsewhere.
$renameBefore = [bool](Test-WuPendingFileRename)
$previousEncoding = $null
try {
    try {
        $previousEncoding = [Console]::OutputEncoding
        [Console]::OutputEncoding = [System.Text.Encoding]::Unicode
    }
    catch {
        # A task has no console: the output is then unreadable, which only costs progress.
        Write-Verbose 'console encoding not changed'
    }
    $onLine = {
        param([string]$Line)
        if ($Line -match '(\d{1,3})\s?%') {
            Set-WuStepProgress -RunId $RunId -Step 'sfc' -Percent ([math]::Min(99, [int]$Matches[1]))
        }
    }
    $run = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'sfc.exe') -ArgumentList @('/scannow') -OnLine $onLine
}
finally {
    if ($null -ne $previousEncoding) {
        [Console]::OutputEncoding = $previousEncoding
    }
}

$srLines = @()
if (Test-Path -LiteralPath $cbsLog) {
    $srLines = @((Read-LogFrom -Path $cbsLog -Offset $offset) -split "`r?`n" | Where-Object -FilterScript { $_ -match '\[SR\]' })
}
$cannotRepair = @($srLines | Where-Object -FilterScript { $_ -match 'Cannot repair member file' })
$repaired = @($srLines | Where-Object -FilterScript { $_ -match 'Repairing corrupted file|Repaired file|Repairing \d+ components' -and $_ -notmatch 'Repairing 0 components' })
$verified = @($srLines | Where-Object -FilterScript { $_ -match 'Verify complete' }).Count -gt 0

$facts['exit_code'] = $run.ExitCode
$facts['sr_lines'] = $srLines.Count
$facts['verify_complete'] = $verified
$facts['cannot_repair'] = @($cannotRepair | Select-Object -First 20)
$facts['repaired'] = @($repaired | Select-Object -First 20)
$verdict = 'no-violations'
if ($cannotRepair.Count -gt 0) {
    $verdict = 'corruption-not-repaired'
}
elseif ($repaired.Count -gt 0) {
    $verdict = 'repaired'
}
elseif (-not $verified) {
    $verdict = 'did-not-run'
}
$facts['verdict'] = $verdict

$status = 'ok'
$exitCode = 0
$messages = @()
$changes = @()
$rebootRequired = $false
switch ($verdict) {
    'corruption-not-repaired' {
        $status = 'failed'
        $exitCode = 6
        $messages = @(('sfc found {0} file(s) it could not repair: run dism (RestoreHealth), then sfc again' -f $cannotRepair.Count))
    }
    'did-not-run' {
        $status = 'failed'
        $exitCode = 1
        $messages = @(('sfc exited {0} and wrote no verification to CBS.log' -f $run.ExitCode))
    }
    'repaired' {
        $changes = @([pscustomobject]@{ kind = 'system-files-repaired'; count = $repaired.Count })
        $newSignals = @(Get-WuPendingReboot | Where-Object -FilterScript { $pendingBefore -notcontains $_ })
        $newRename = (-not $renameBefore) -and [bool](Test-WuPendingFileRename)
        if ($newSignals.Count -gt 0 -or $newRename) {
            $status = 'reboot-required'
            $exitCode = 3010
            $rebootRequired = $true
            $messages = @('repaired; a reboot completes the repair')
        }
    }
    default {
        $messages = @('no integrity violations')
    }
}
Complete-WuStep -Step 'sfc' -Status $status -ExitCode $exitCode -Facts $facts -Changes $changes -Messages $messages `
    -RebootRequired $rebootRequired -ResultMarker $ResultMarker
