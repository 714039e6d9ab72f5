# wuremote-script
# name: detached-poll
# version: 2
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Reads the state of a detached step: queued, running (with percent), finished (with the
    step's own exit code and result object) or interrupted; optionally a slice of its transcript.
.DESCRIPTION
    Read-only apart from recording "interrupted" in status.json once it is certain (the process
    is gone, or the host restarted since the step began). A step interrupted by a reboot is
    never reported as success. Never stops anything.
.PARAMETER TranscriptOffset
    Byte offset into the step's transcript to read from; -1 (default) reads none.
.PARAMETER MaxTranscriptBytes
    Largest slice returned per call.
.PARAMETER WaitSeconds
    Wait on the host, up to this long, for the state or the percent to differ from SeenState and
    SeenPercent before answering (0, the default: answer at once). The controller keeps it a
    little under the WS-Management OperationTimeout of its Receive, so one Receive carries the
    whole wait: a step that runs for 40 minutes costs a request per change, not one per interval.
.PARAMETER SeenState
    The state the controller last read ('' when it has read none).
.PARAMETER SeenPercent
    The percent the controller last read, as text ('' when none).
.NOTES
    Exit codes: 0 state read (facts.state; the step's own exit code is facts.exit_code),
    2 no such detached step (never started, or removed), 1 failed.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^[a-z][a-z0-9-]{0,40}$')][string]$Step,
    [ValidateRange(-1, [long]::MaxValue)][long]$TranscriptOffset = -1,
    [ValidateRange(1024, 4194304)][int]$MaxTranscriptBytes = 262144,
    [ValidateRange(0, 3600)][int]$WaitSeconds = 0,
    [ValidateSet('', 'queued', 'running', 'finished', 'interrupted')][string]$SeenState = '',
    [ValidatePattern('^(|\d{1,3})$')][string]$SeenPercent = ''
)
# wuremote-prelude
if (-not (Test-WuName -Value $RunId)) {
    Complete-WuStep -Step 'detached-poll' -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker `
        -Messages @('a detached step needs a run id of letters, digits, dot, dash or underscore (1-64)')
}
$folder = Get-WuRunFolder -RunId $RunId -Step $Step
$facts = @{ run_id = $RunId; step = $Step }
$current = Get-WuDetachedState -RunId $RunId -Step $Step
# The wait: re-read the state each second until it or the percent moves, or the time is up.
# Measured on a Stopwatch, not the clock: a clock step (sync-time, w32time) cannot stretch or cut the wait.
$waited = [System.Diagnostics.Stopwatch]::StartNew()
while ($null -ne $current -and [string]$current.state -eq $SeenState -and [string]$current.status.percent -eq $SeenPercent -and
    $waited.Elapsed.TotalSeconds -lt $WaitSeconds) {
    Start-Sleep -Seconds 1
    $current = Get-WuDetachedState -RunId $RunId -Step $Step
}
if ($null -eq $current) {
    Complete-WuStep -Step 'detached-poll' -Status 'not-applicable' -ExitCode 2 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('no detached step {0} for run {1} on this host' -f $Step, $RunId))
}

if ($current.state -eq 'interrupted' -and $current.status.state -ne 'interrupted') {
    $status = $current.status
    $status.state = 'interrupted'
    $status.error = $current.reason
    try {
        Write-WuJsonFile -Path $current.status_path -InputObject $status
    }
    catch {
        # The runner may be writing at this instant; the next poll records it.
        Write-Verbose ('interrupted state not recorded: {0}' -f $_.Exception.Message)
    }
}

$status = $current.status
$facts['state'] = $current.state
$facts['reason'] = $current.reason
$facts['task_state'] = $current.task_state
$facts['pid'] = $status.pid
$facts['percent'] = $status.percent
$facts['message'] = ''
if (@($status.PSObject.Properties | ForEach-Object -Process { $_.Name }) -contains 'message') {
    # What the step does now, when it says (Set-WuStepProgress -Message): "3/7 KB5034441".
    $facts['message'] = [string]$status.message
}
$facts['started'] = $status.started
$facts['finished'] = $status.finished
$facts['exit_code'] = $status.exit_code
$facts['result'] = $null
if ($current.state -eq 'finished') {
    $facts['result'] = Read-WuJsonFile -Path (Join-Path -Path $folder -ChildPath 'result.json')
}

if ($TranscriptOffset -ge 0) {
    $path = Join-Path -Path $folder -ChildPath 'transcript.log'
    $facts['transcript'] = ''
    $facts['transcript_next_offset'] = $TranscriptOffset
    if (Test-Path -LiteralPath $path) {
        # The task holds the transcript open for writing: share it.
        $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @($path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
        try {
            $length = $stream.Length
            $offset = [math]::Min($TranscriptOffset, $length)
            $count = [int][math]::Min([long]$MaxTranscriptBytes, $length - $offset)
            $buffer = New-Object -TypeName byte[] -ArgumentList $count
            $null = $stream.Seek($offset, [System.IO.SeekOrigin]::Begin)
            $read = $stream.Read($buffer, 0, $count)
            # Stop at the last complete line while the step runs, so no character is split.
            if ($current.state -ne 'finished' -and $read -gt 0) {
                $lastNewline = [Array]::LastIndexOf($buffer, [byte]10, $read - 1)
                $read = $lastNewline + 1
            }
            $facts['transcript'] = [System.Text.Encoding]::UTF8.GetString($buffer, 0, $read)
            $facts['transcript_next_offset'] = $offset + $read
        }
        finally {
            $stream.Dispose()
        }
    }
}
Complete-WuStep -Step 'detached-poll' -Status 'ok' -ExitCode 0 -Facts $facts -ResultMarker $ResultMarker
