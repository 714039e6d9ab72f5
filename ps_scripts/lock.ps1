# wuremote-script
# name: lock
# version: 2
# reboot: never
# timeout: 60
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    A per-host lock so two controllers never work on one host at once: take, renew, release or show.
.DESCRIPTION
    %ProgramData%\wuremote\lock.json names the holder (run_id and the controller instance) and
    holds a lease. It is read and written while opened exclusively, so two controllers racing
    cannot both win.
      take     succeeds when the lock is free, its lease has run out, or it is already held by
               this run from this controller (then it is renewed: a resume reclaims its lock)
      renew    as take; the controller renews as each rung begins while it works the host
      release  removes the lock only when this run and controller hold it (or it is free)
      show     reports the holder
    The same run id from another controller (a resumed copy of the run on another machine) is
    refused and told who holds the host.
    The lease is measured on the host's performance counter, not its clock: sync-time may step
    the clock by hours, which must neither end a lease nor prolong a dead one. The counter is
    "monotonically nondecreasing" and its frequency "fixed at system boot" (Microsoft,
    KeQueryPerformanceCounter and "Acquiring high-resolution time stamps",
    learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps);
    Stopwatch.GetTimestamp reads it (Microsoft, Stopwatch.GetTimestamp). It restarts with the
    host, so the lease records which boot it was renewed in: a random id kept in a volatile
    registry key, which "is not preserved when the corresponding registry hive is unloaded",
    for HKLM at shutdown (Microsoft, RegistryOptions.Volatile and RegCreateKeyExW
    REG_OPTION_VOLATILE). Renewed in an earlier boot, the lease has run at least as long as
    this boot's counter; a lock.json without lease fields (an older wuremote) expires by
    expires_utc.
.NOTES
    Exit codes: 0 done, 4 held by another run or controller (facts.holder), 1 failed, 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateSet('take', 'renew', 'release', 'show')][string]$Action = 'take',
    [ValidatePattern('^$|^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$')][string]$Controller = '',
    [ValidateRange(1, 10080)][int]$ExpiresMinutes = 240
)
# wuremote-prelude
Assert-WuElevated -Step 'lock' -ResultMarker $ResultMarker
if ($Action -ne 'show' -and -not (Test-WuName -Value $RunId)) {
    Complete-WuStep -Step 'lock' -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker `
        -Messages @('take, renew and release need a run id of letters, digits, dot, dash or underscore (1-64)')
}
$root = Protect-WuStateRoot
$null = Start-WuTranscript -Step 'lock' -RunId $RunId
$path = Join-Path -Path $root -ChildPath 'lock.json'
$now = [DateTime]::UtcNow
$nowTick = [long]([System.Diagnostics.Stopwatch]::GetTimestamp() / ([double][System.Diagnostics.Stopwatch]::Frequency / 1000.0))
$facts = @{ action = $Action; run_id = $RunId; controller = $Controller }

function Get-WuBootMarker {
    <# This boot's id: a GUID in a volatile key (gone at shutdown), created on first use. #>
    $software = [Microsoft.Win32.Registry]::LocalMachine.CreateSubKey('SOFTWARE\wuremote')
    try {
        $boot = $software.CreateSubKey('boot', [Microsoft.Win32.RegistryKeyPermissionCheck]::ReadWriteSubTree, [Microsoft.Win32.RegistryOptions]::Volatile)
        try {
            $marker = [string]$boot.GetValue('Id', '')
            if (-not $marker) {
                $marker = [guid]::NewGuid().ToString()
                $boot.SetValue('Id', $marker, [Microsoft.Win32.RegistryValueKind]::String)
            }
            $marker
        }
        finally {
            $boot.Dispose()
        }
    }
    finally {
        $software.Dispose()
    }
}

function Test-WuLeaseOver {
    <# Whether the holder's lease ran out, judged by the counter (see .DESCRIPTION). #>
    param([object]$Holder, [string]$BootMarker)
    $names = $Holder.PSObject.Properties.Name
    if (-not ($names -contains 'renewed_tick_ms' -and $names -contains 'boot_marker' -and $names -contains 'lease_minutes')) {
        return ([DateTime]::Parse([string]$Holder.expires_utc)).ToUniversalTime() -lt $now
    }
    $elapsed = $nowTick
    if ([string]$Holder.boot_marker -eq $BootMarker -and $nowTick -ge [long]$Holder.renewed_tick_ms) {
        $elapsed = $nowTick - [long]$Holder.renewed_tick_ms
    }
    $elapsed -gt [long]$Holder.lease_minutes * 60000
}

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
    $bootMarker = Get-WuBootMarker
    $reader = New-Object -TypeName System.IO.StreamReader -ArgumentList @($stream, [System.Text.Encoding]::UTF8, $false, 4096, $true)
    $text = $reader.ReadToEnd()
    $holder = $null
    if ($text.Trim()) {
        $holder = ConvertFrom-Json -InputObject $text
    }
    $expired = $null -ne $holder -and (Test-WuLeaseOver -Holder $holder -BootMarker $bootMarker)
    $free = $null -eq $holder -or $expired
    $facts['holder'] = $holder
    $facts['expired'] = $expired
    $holderController = ''
    if ($null -ne $holder -and $holder.PSObject.Properties.Name -contains 'controller') {
        $holderController = [string]$holder.controller
    }
    # A lock.json from an older wuremote names no controller: its run id alone decides.
    $mine = $null -ne $holder -and [string]$holder.run_id -eq $RunId -and (-not $holderController -or $holderController -eq $Controller)
    $who = 'run {0}' -f $(if ($null -ne $holder) { $holder.run_id } else { '' })
    if ($holderController) {
        $who = '{0} of controller {1}' -f $who, $holderController
    }

    $newText = $null
    switch ($Action) {
        { $_ -eq 'take' -or $_ -eq 'renew' } {
            if ($free -or $mine) {
                $record = [ordered]@{
                    run_id          = $RunId
                    controller      = $Controller
                    taken_utc       = $now.ToString('o')
                    renewed_utc     = $now.ToString('o')
                    expires_utc     = $now.AddMinutes($ExpiresMinutes).ToString('o')
                    lease_minutes   = $ExpiresMinutes
                    renewals        = 0
                    boot_marker     = $bootMarker
                    renewed_tick_ms = $nowTick
                    host            = $env:COMPUTERNAME
                }
                if ($mine -and -not $expired) {
                    $record.taken_utc = [string]$holder.taken_utc
                    if ($holder.PSObject.Properties.Name -contains 'renewals') {
                        $record.renewals = [int]$holder.renewals + 1
                    }
                }
                $newText = $record | ConvertTo-Json
                $facts['holder'] = $record
                $changes = @([pscustomobject]@{ kind = 'lock-taken'; run_id = $RunId; expires_utc = $record.expires_utc })
            }
            else {
                $status = 'failed'
                $exitCode = 4
                if ($holder.PSObject.Properties.Name -contains 'lease_minutes') {
                    $messages = @(('host is locked by {0} (lease of {1} min, renewed {2})' -f $who, $holder.lease_minutes, $holder.renewed_utc))
                }
                else {
                    $messages = @(('host is locked by {0} until {1}' -f $who, $holder.expires_utc))
                }
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
                $messages = @(('lock of {0} expired; left for its owner or the next take' -f $who))
            }
            else {
                $status = 'failed'
                $exitCode = 4
                $messages = @(('lock belongs to {0}; not released' -f $who))
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
