# wuremote-script
# name: collect-logs
# version: 1
# reboot: never
# timeout: 120
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Bounded tails of CBS.log, dism.log and the Windows Update client's event log; changes nothing.
.DESCRIPTION
    When a host ends failed or needs the operator, these tails go into the run's artifacts so
    the operator sees what servicing said without logging on.
      CBS.log   %SystemRoot%\Logs\CBS\CBS.log, opened with read/write sharing because
                TrustedInstaller keeps it open; the file is ANSI/UTF-8 text (only sfc's
                console is UTF-16), decoded as UTF-8.
      dism.log  %SystemRoot%\Logs\DISM\dism.log, read the same way.
      WindowsUpdateClient
                the newest events of Microsoft-Windows-WindowsUpdateClient/Operational, one
                line each (UTC time, event id, level, first line of the message), oldest
                first. WindowsUpdate.log is ETL since Windows 10 / Server 2016 and
                Get-WindowsUpdateLog is slow and needs symbols, so the event log stands in.
    Each tail is at most -MaxBytes bytes of the source, cut at the front to whole lines:
    facts.logs.<name> = text, bytes_total (the file's size, or the size of every event line
    read), truncated. A log that is missing or unreadable goes to facts.errors
    ("CBS.log: <reason>"); the others are still returned.
.PARAMETER MaxBytes
    Upper bound of each tail in bytes.
.NOTES
    Exit codes: 0 at least one log read, 1 none could be read, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateRange(1024, 1048576)][int]$MaxBytes = 65536
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'collect-logs' -RunId $RunId
Assert-WuElevated -Step 'collect-logs' -ResultMarker $ResultMarker

$UpdateClientLog = 'Microsoft-Windows-WindowsUpdateClient/Operational'
$MaxEvents = 200
$EventLevels = @{ 0 = 'Information'; 1 = 'Critical'; 2 = 'Error'; 3 = 'Warning'; 4 = 'Information'; 5 = 'Verbose' }

function Read-FileTail {
    <# The last -MaxBytes bytes of a file another process holds open, from the first whole line. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][int]$MaxBytes
    )
    if (-not [System.IO.File]::Exists($Path)) {
        throw ('not found: {0}' -f $Path)
    }
    $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
    try {
        $total = $stream.Length
        $start = [math]::Max([long]0, $total - $MaxBytes)
        $null = $stream.Seek($start, [System.IO.SeekOrigin]::Begin)
        $buffer = New-Object -TypeName 'System.Byte[]' -ArgumentList ([int]($total - $start))
        $filled = 0
        while ($filled -lt $buffer.Length) {
            $read = $stream.Read($buffer, $filled, $buffer.Length - $filled)
            if ($read -le 0) {
                break
            }
            $filled += $read
        }
    }
    finally {
        $stream.Dispose()
    }
    $first = 0
    if ($start -gt 0) {
        # Mid-line (possibly mid-character) cut: keep from the byte after the first line feed.
        $first = [Array]::IndexOf($buffer, [byte]10, 0, $filled) + 1
        if ($first -eq 0) {
            $first = $filled
        }
    }
    elseif ($filled -ge 3 -and $buffer[0] -eq 0xEF -and $buffer[1] -eq 0xBB -and $buffer[2] -eq 0xBF) {
        $first = 3
    }
    @{
        text        = [System.Text.Encoding]::UTF8.GetString($buffer, $first, $filled - $first)
        bytes_total = [long]$total
        truncated   = ($start -gt 0)
    }
}

function Read-UpdateClientTail {
    <# The newest update-client events as text lines, oldest first, the oldest dropped to fit -MaxBytes. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][int]$MaxBytes)
    try {
        $records = @(Get-WinEvent -LogName $UpdateClientLog -MaxEvents $MaxEvents)
    }
    catch {
        if ($_.FullyQualifiedErrorId -notlike 'NoMatchingEventsFound*') {
            throw
        }
        # An empty log is a log read: nothing happened yet.
        $records = @()
    }
    $lines = New-Object -TypeName System.Collections.Generic.List[string]
    foreach ($record in $records) {
        $level = 'Level{0}' -f [int]$record.Level
        if ($EventLevels.ContainsKey([int]$record.Level)) {
            $level = $EventLevels[[int]$record.Level]
        }
        $message = ([string]$record.Message).Trim()
        $firstLine = ($message -split "`r?`n")[0].Trim()
        $lines.Add(('{0} {1} {2} {3}' -f $record.TimeCreated.ToUniversalTime().ToString('o'), [int]$record.Id, $level, $firstLine))
    }
    # Get-WinEvent answers newest first: keep the newest lines that fit, then put them in time order.
    $kept = New-Object -TypeName System.Collections.Generic.List[string]
    $total = [long]0
    $full = $false
    foreach ($line in $lines) {
        $size = [System.Text.Encoding]::UTF8.GetByteCount($line) + 2
        if (-not $full -and $total + $size -le $MaxBytes) {
            $kept.Add($line)
        }
        else {
            $full = $true
        }
        $total += $size
    }
    $kept.Reverse()
    $text = ''
    if ($kept.Count -gt 0) {
        $text = ($kept -join "`r`n") + "`r`n"
    }
    @{
        text        = $text
        bytes_total = $total
        truncated   = ($kept.Count -lt $lines.Count)
    }
}

$sources = [ordered]@{
    'CBS.log'  = { Read-FileTail -Path (Join-Path -Path $env:SystemRoot -ChildPath 'Logs\CBS\CBS.log') -MaxBytes $MaxBytes }
    'dism.log' = { Read-FileTail -Path (Join-Path -Path $env:SystemRoot -ChildPath 'Logs\DISM\dism.log') -MaxBytes $MaxBytes }
    'WindowsUpdateClient' = { Read-UpdateClientTail -MaxBytes $MaxBytes }
}
$logs = @{}
$errors = New-Object -TypeName System.Collections.Generic.List[string]
foreach ($name in $sources.Keys) {
    try {
        $logs[$name] = & $sources[$name]
    }
    catch {
        $errors.Add(('{0}: {1}' -f $name, $_.Exception.GetBaseException().Message))
    }
}

$facts = @{ logs = $logs; errors = $errors.ToArray() }
if ($logs.Count -eq 0) {
    Complete-WuStep -Step 'collect-logs' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('no log could be read: see facts.errors')
}
$messages = @()
if ($errors.Count -gt 0) {
    $messages = @(('{0} of {1} logs could not be read: see facts.errors' -f $errors.Count, $sources.Count))
}
Complete-WuStep -Step 'collect-logs' -Status 'ok' -ExitCode 0 -Facts $facts -Messages $messages -ResultMarker $ResultMarker
