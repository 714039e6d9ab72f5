# wuremote-script
# name: lock
# version: 1
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    A per-host lock so two runs never work on one host at once: take, release or show.
.DESCRIPTION
    %ProgramData%\wuremote\lock.json holds run_id, taken_utc and expires_utc. It is read and
    written while opened exclusively, so two controllers racing cannot both win.
      take     succeeds when the lock is free, expired, or already this run's (renewed)
      release  removes the lock only when this run holds it (or it is free)
      show     reports the holder
.NOTES
    Exit codes: 0 done, 4 held by another run (facts.holder), 1 failed, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateSet('take', 'release', 'show')][string]$Action = 'take',
    [ValidateRange(1, 10080)][int]$ExpiresMinutes = 240
)
# wuremote-prelude
Assert-WuElevated -Step 'lock' -ResultMarker $ResultMarker
if ($Action -ne 'show' -and -not (Test-WuName -Value $RunId)) {
    Complete-WuStep -Step 'lock' -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker `
        -Messages @('take and release need a run id of letters, digits, dot, dash or underscore (1-64)')
}
$root = Protect-WuStateRoot
$null = Start-WuTranscript -Step 'lock' -RunId $RunId
$path = Join-Path -Path $root -ChildPath 'lock.json'
$now = [DateTime]::UtcNow
$facts = @{ action = $Action; run_id = $RunId }

# Open exclusively, retrying briefly while another caller holds the file open.
$stream = $null
for ($attempt = 1; $null -eq $stream; $attempt++) {
    try {
        $stream = New-Object -TypeName System.IO.FileStream -ArgumentList @($path, [System.IO.FileMode]::OpenOrCreate, [System.IO.FileAccess]::ReadWrite, [System.IO.FileShare]::None)
    }
    catch [System.IO.IOException] {
        if ($attempt -ge 20) {
            Complete-WuStep -Step 'lock' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
                -Messages @('the lock file stayed busy for 10 s')
        }
        Start-Sleep -Milliseconds 500
    }
}

$status = 'ok'
$exitCode = 0
$messages = @()
$changes = @()
try {
    $reader = New-Object -TypeName System.IO.StreamReader -ArgumentList @($stream, [System.Text.Encoding]::UTF8, $false, 4096, $true)
    $text = $reader.ReadToEnd()
    $holder = $null
    if ($text.Trim()) {
        $holder = ConvertFrom-Json -InputObject $text
    }
    $expired = $null -ne $holder -and ([DateTime]::Parse([string]$holder.expires_utc)).ToUniversalTime() -lt $now
    $free = $null -eq $holder -or $expired
    $facts['holder'] = $holder
    $facts['expired'] = $expired
    $mine = $null -ne $holder -and [string]$holder.run_id -eq $RunId

    $newText = $null
    switch ($Action) {
        'take' {
            if ($free -or $mine) {
                $record = [ordered]@{
                    run_id      = $RunId
                    taken_utc   = $now.ToString('o')
                    expires_utc = $now.AddMinutes($ExpiresMinutes).ToString('o')
                    host        = $env:COMPUTERNAME
                }
                if ($mine -and -not $expired) {
                    $record.taken_utc = [string]$holder.taken_utc
                }
                $newText = $record | ConvertTo-Json
                $facts['holder'] = $record
                $changes = @([pscustomobject]@{ kind = 'lock-taken'; run_id = $RunId; expires_utc = $record.expires_utc })
            }
            else {
                $status = 'failed'
                $exitCode = 4
                $messages = @(('host is locked by run {0} until {1}' -f $holder.run_id, $holder.expires_utc))
            }
        }
        'release' {
            if ($mine -or $null -eq $holder) {
                $newText = ''
                $facts['holder'] = $null
                if ($mine) {
                    $changes = @([pscustomobject]@{ kind = 'lock-released'; run_id = $RunId })
                }
            }
            elseif ($expired) {
                $messages = @(('lock of run {0} expired; left for its owner or the next take' -f $holder.run_id))
            }
            else {
                $status = 'failed'
                $exitCode = 4
                $messages = @(('lock belongs to run {0}; not released' -f $holder.run_id))
            }
        }
        default {
            $facts['free'] = $free
        }
    }
    if ($null -ne $newText) {
        $bytes = [System.Text.Encoding]::UTF8.GetBytes($newText)
        $stream.SetLength(0)
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Flush()
    }
}
catch {
    $status = 'failed'
    $exitCode = 1
    $messages = @(('lock {0} failed: {1}' -f $Action, $_.Exception.Message))
}
finally {
    $stream.Dispose()
}
Complete-WuStep -Step 'lock' -Status $status -ExitCode $exitCode -Facts $facts -Changes $changes -Messages $messages -ResultMarker $ResultMarker
