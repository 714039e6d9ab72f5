# wuremote-script
# name: reset-components
# version: 1
# reboot: recommended
# timeout: 600
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Resets the Windows Update components: stops the update services, moves their caches aside
    under timestamped names, repairs start types, and starts the services again.
.DESCRIPTION
    Refuses while a servicing operation is pending (WinSxS\pending.xml) or, after waiting up to
    -BusyWaitSeconds, while DISM or sfc runs; a lingering TiWorker alone is not busy.
    Levels:
      gentle  SoftwareDistribution\DataStore and SoftwareDistribution\Download moved aside.
      full    the whole SoftwareDistribution, System32\catroot2 and the BITS queue
              (%ProgramData%\Microsoft\Network\Downloader) moved aside.
    Backups are named <folder>.wuremote-<UTC timestamp> beside the original (a second run
    never collides with the first); at most -KeepBackups of each kind are kept.
    Services wuauserv, bits, cryptsvc and msiserver are stopped with a bounded wait; one that
    will not stop is named and nothing is moved. Start types of the update services are
    recorded before and restored after. A service Group Policy disables is reported, not
    fought; one disabled without a policy is set back to its Windows default and the change
    recorded. WaaSMedicSvc and WinRM are never touched. Services that were running (and the
    four reset services) are started again in a finally block, even when a middle step fails.
.PARAMETER Level
    gentle (default) or full.
.NOTES
    Exit codes: 0 reset done, 1 failed (services were started again), 4 refused: servicing in
    progress (reboot or wait first), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [ValidateSet('gentle', 'full')][string]$Level = 'gentle',
    [ValidateRange(5, 600)][int]$StopTimeoutSeconds = 60,
    [ValidateRange(1, 10)][int]$KeepBackups = 2,
    [ValidateRange(0, 300)][int]$BusyWaitSeconds = 120
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'reset-components' -RunId $RunId
Assert-WuElevated -Step 'reset-components' -ResultMarker $ResultMarker

$ResetServices = @('wuauserv', 'bits', 'cryptsvc', 'msiserver')
$UpdateServices = @('wuauserv', 'bits', 'cryptsvc', 'msiserver', 'trustedinstaller', 'appidsvc', 'usosvc')
$NeverTouch = @('waasmedicsvc', 'winrm')
$stamp = [DateTime]::UtcNow.ToString('yyyyMMddTHHmmssZ')
$changes = New-Object -TypeName System.Collections.Generic.List[object]
$messages = New-Object -TypeName System.Collections.Generic.List[string]
$facts = @{ level = $Level }

function Get-WindowsDefaultStartType {
    <# The start type a clean install gives each update service (usosvc is delayed-auto from build 17763). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][int]$Build
    )
    switch ($Name) {
        'cryptsvc' { return 'Automatic' }
        'usosvc' {
            if ($Build -ge 17763) {
                return 'AutomaticDelayed'
            }
            return 'Manual'
        }
        default { return 'Manual' }
    }
}

function Move-ToBackup {
    <# Renames a folder to <name>.wuremote-<stamp> (suffix -2, -3... if taken) and prunes old backups. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) {
        return
    }
    $parent = Split-Path -Parent $Path
    $leaf = Split-Path -Leaf $Path
    $target = '{0}.wuremote-{1}' -f $leaf, $stamp
    $n = 2
    while (Test-Path -LiteralPath (Join-Path -Path $parent -ChildPath $target)) {
        $target = '{0}.wuremote-{1}-{2}' -f $leaf, $stamp, $n
        $n++
    }
    Rename-Item -LiteralPath $Path -NewName $target
    $changes.Add([pscustomobject]@{ kind = 'folder-moved'; path = $Path; backup = (Join-Path -Path $parent -ChildPath $target) })

    $old = @(Get-ChildItem -LiteralPath $parent -Directory -Force |
            Where-Object -FilterScript { $_.Name -like ('{0}.wuremote-*' -f $leaf) } |
            Sort-Object -Property Name -Descending |
            Select-Object -Skip $KeepBackups)
    foreach ($folder in $old) {
        try {
            Remove-Item -LiteralPath $folder.FullName -Recurse -Force
            $changes.Add([pscustomobject]@{ kind = 'backup-pruned'; path = $folder.FullName })
        }
        catch {
            $messages.Add(('old backup {0} not removed: {1}' -f $folder.FullName, $_.Exception.Message))
        }
    }
}

function Stop-UpdateService {
    <# Stops one service with a bounded wait; returns $null or a sentence naming why it did not stop. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Name)
    $service = Get-Service -Name $Name
    if ($service.Status -eq 'Stopped') {
        return $null
    }
    # -Force: services that depend on this one stop too; they are recorded and started again.
    Stop-Service -Name $Name -Force -NoWait
    try {
        $service.WaitForStatus('Stopped', (New-TimeSpan -Seconds $StopTimeoutSeconds))
    }
    catch [System.ServiceProcess.TimeoutException] {
        $service.Refresh()
        return ('{0} did not stop within {1} s (state {2}); nothing was moved' -f $Name, $StopTimeoutSeconds, $service.Status)
    }
    $changes.Add([pscustomobject]@{ kind = 'service-state'; name = $Name; from = 'Running'; to = 'Stopped' })
    $null
}

# --- refuse while servicing runs ---
# A pending servicing operation (pending.xml) or a DISM/sfc at work; TiWorker alone is not busy
# (Wait-WuServicingIdle says why), so verify's own scan does not end the ladder.
$pendingXml = Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')
$facts['servicing'] = @{ pending_xml = $pendingXml }
if ($pendingXml) {
    Complete-WuStep -Step 'reset-components' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @('a servicing operation is pending a reboot (pending.xml): reboot, then run again; nothing was changed')
}
$busyWith = Wait-WuServicingIdle -ProcessName @('DismHost', 'sfc') -WaitSeconds $BusyWaitSeconds
if ($busyWith) {
    $facts['servicing']['busy_processes'] = $busyWith
    Complete-WuStep -Step 'reset-components' -Status 'failed' -ExitCode 4 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('DISM or sfc is running ({0}); left alone: run again when it ends; nothing was changed' -f $busyWith))
}

# --- record start types and states ---
$build = [int](Get-CimInstance -ClassName Win32_OperatingSystem).BuildNumber
$table = Get-WuServiceTable
$policy = Get-WuPolicyStartTypes
$recorded = @{}
$wasRunning = New-Object -TypeName System.Collections.Generic.List[string]
foreach ($name in $UpdateServices) {
    if ($NeverTouch -contains $name -or -not $table.ContainsKey($name)) {
        continue
    }
    $recorded[$name] = ConvertTo-WuStartType -Service $table[$name]
    if ([string]$table[$name].State -eq 'Running') {
        $wasRunning.Add($name)
    }
}
$facts['start_types_before'] = $recorded.Clone()
$facts['policy_disabled'] = @()

$failure = $null
try {
    # --- disabled services: policy is reported, a local change is undone ---
    foreach ($name in @($recorded.Keys)) {
        if ($recorded[$name] -ne 'Disabled') {
            continue
        }
        if ($null -ne $policy -and $policy.ContainsKey($name) -and $policy[$name] -eq 'Disabled') {
            $facts['policy_disabled'] += $name
            $messages.Add(('{0} is disabled by Group Policy: fix the policy; left as it is' -f $name))
            continue
        }
        $default = Get-WindowsDefaultStartType -Name $name -Build $build
        Set-WuServiceStartType -Name $name -StartType $default -Confirm:$false
        $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = $name; from = 'Disabled'; to = $default; reason = 'disabled without a policy' })
        $recorded[$name] = $default
    }

    # --- stop: dependents that were running are started again later ---
    foreach ($name in $ResetServices) {
        if (-not $recorded.ContainsKey($name)) {
            continue
        }
        foreach ($dependent in @((Get-Service -Name $name).DependentServices)) {
            $dependentName = $dependent.Name.ToLowerInvariant()
            if ($dependent.Status -eq 'Running' -and $NeverTouch -notcontains $dependentName -and -not $wasRunning.Contains($dependentName)) {
                $wasRunning.Add($dependentName)
            }
        }
        $notStopped = Stop-UpdateService -Name $name
        if ($notStopped) {
            throw $notStopped
        }
    }

    # --- move caches aside ---
    $sd = Join-Path -Path $env:SystemRoot -ChildPath 'SoftwareDistribution'
    if ($Level -eq 'gentle') {
        Move-ToBackup -Path (Join-Path -Path $sd -ChildPath 'DataStore')
        Move-ToBackup -Path (Join-Path -Path $sd -ChildPath 'Download')
    }
    else {
        Move-ToBackup -Path $sd
        Move-ToBackup -Path (Join-Path -Path $env:SystemRoot -ChildPath 'System32\catroot2')
        Move-ToBackup -Path (Join-Path -Path $env:ProgramData -ChildPath 'Microsoft\Network\Downloader')
    }
}
catch {
    $failure = $_.Exception.Message
    $messages.Add(('reset stopped: {0}' -f $failure))
}
finally {
    # --- always: start types as recorded, services running again ---
    $after = Get-WuServiceTable
    foreach ($name in @($recorded.Keys)) {
        $now = ConvertTo-WuStartType -Service $after[$name]
        if ($now -ne $recorded[$name] -and @('Automatic', 'AutomaticDelayed', 'Manual', 'Disabled') -contains $recorded[$name]) {
            try {
                Set-WuServiceStartType -Name $name -StartType $recorded[$name] -Confirm:$false
                $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = $name; from = $now; to = $recorded[$name]; reason = 'restored' })
            }
            catch {
                $messages.Add(('start type of {0} not restored: {1}' -f $name, $_.Exception.Message))
                if (-not $failure) {
                    $failure = 'start types not restored'
                }
            }
        }
    }
    $toStart = @($ResetServices + $wasRunning.ToArray()) | Select-Object -Unique
    $notStarted = New-Object -TypeName System.Collections.Generic.List[string]
    foreach ($name in $toStart) {
        if ($NeverTouch -contains $name -or -not $after.ContainsKey($name) -or @($facts['policy_disabled']) -contains $name) {
            continue
        }
        try {
            $service = Get-Service -Name $name
            if ($service.Status -ne 'Running') {
                Start-Service -Name $name
                $service.WaitForStatus('Running', (New-TimeSpan -Seconds $StopTimeoutSeconds))
                $changes.Add([pscustomobject]@{ kind = 'service-state'; name = $name; from = 'Stopped'; to = 'Running' })
            }
        }
        catch {
            $notStarted.Add($name)
            $messages.Add(('{0} did not start: {1}' -f $name, $_.Exception.Message))
        }
    }
    $facts['not_started'] = $notStarted.ToArray()
    $final = Get-WuServiceTable
    $facts['start_types_after'] = @{}
    foreach ($name in @($recorded.Keys)) {
        $facts['start_types_after'][$name] = ConvertTo-WuStartType -Service $final[$name]
    }
}

$facts['reboot_recommended'] = $true
if ($failure -or $facts['not_started'].Count -gt 0) {
    Complete-WuStep -Step 'reset-components' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() `
        -Messages $messages.ToArray() -ResultMarker $ResultMarker
}
Complete-WuStep -Step 'reset-components' -Status 'ok' -ExitCode 0 -Facts $facts -Changes $changes.ToArray() `
    -Messages $messages.ToArray() -ResultMarker $ResultMarker
