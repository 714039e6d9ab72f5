# wuremote-script
# name: diagnose
# version: 2
# reboot: never
# timeout: 300
# idempotent: yes
# detached: no
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Read-only facts about Windows Update health on this host; changes nothing.
.DESCRIPTION
    Runs first and after every repair step. Each group of facts is read on its own: a group
    that cannot be read is listed in facts.errors and the others are still returned.
    The shape of facts is documented in wuremote/lab/fixtures/README.md ("facts").
.PARAMETER ControllerUtc
    The controller's clock (ISO 8601, UTC) when it sent this call; used for clock skew.
.PARAMETER MinFreeGB
    Free space on the system drive below which disk.low is true (Microsoft suggests 15-20 GB).
.NOTES
    Exit codes: 0 facts read (some groups may be in facts.errors), 1 failed.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [string]$ControllerUtc = '',
    [ValidateRange(1, 1000)][int]$MinFreeGB = 15
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'diagnose' -RunId $RunId

$UpdateServices = @('wuauserv', 'bits', 'cryptsvc', 'msiserver', 'trustedinstaller', 'appidsvc', 'usosvc')
$errors = New-Object -TypeName System.Collections.Generic.List[string]
$facts = @{}

function Read-FactGroup {
    <# Runs one fact reader; a failure is recorded in facts.errors and the group set to $null. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][scriptblock]$Reader
    )
    try {
        $facts[$Name] = & $Reader
    }
    catch {
        $facts[$Name] = $null
        $errors.Add(('{0}: {1}' -f $Name, $_.Exception.Message))
    }
}

function Get-FolderBytes {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) {
        return [long]0
    }
    # Files locked or denied mid-walk must not abort the size estimate; the total is a lower bound.
    $sum = (Get-ChildItem -LiteralPath $Path -Recurse -File -Force -ErrorAction SilentlyContinue | Measure-Object -Property Length -Sum).Sum
    if ($null -eq $sum) {
        return [long]0
    }
    [long]$sum
}

function Get-RecentEvent {
    <# Events matching a filter, or none: Get-WinEvent throws when nothing matches. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][hashtable]$Filter)
    try {
        @(Get-WinEvent -FilterHashtable $Filter)
    }
    catch {
        if ($_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*') {
            return @()
        }
        throw
    }
}

$services = Get-WuServiceTable
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$policy = Get-WuPolicyStartTypes

Read-FactGroup -Name 'os' -Reader {
    $productTypes = @{ 1 = 'workstation'; 2 = 'domain-controller'; 3 = 'server' }
    $currentVersion = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    @{
        caption       = [string]$os.Caption
        version       = [string]$os.Version
        build         = [int]$os.BuildNumber
        ubr           = [int](Get-WuRegistryValue -Path $currentVersion -Name 'UBR' -Default 0)
        product_type  = $productTypes[[int]$os.ProductType]
        # The OS's own architecture (AMD64, ARM64, x86), which picks a pushed .msu: a 32-bit
        # PowerShell on 64-bit Windows sees x86 in PROCESSOR_ARCHITECTURE and the real one in
        # PROCESSOR_ARCHITEW6432 (https://learn.microsoft.com/en-us/windows/win32/winprog64/wow64-implementation-details).
        architecture  = [string](@($env:PROCESSOR_ARCHITEW6432, $env:PROCESSOR_ARCHITECTURE) | Where-Object -FilterScript { $_ } | Select-Object -First 1)
        last_boot_utc = $os.LastBootUpTime.ToUniversalTime().ToString('o')
    }
}

Read-FactGroup -Name 'roles' -Reader {
    $computer = Get-CimInstance -ClassName Win32_ComputerSystem
    @{
        domain_member     = [bool]$computer.PartOfDomain
        domain_controller = ([int]$computer.DomainRole -ge 4)
        cluster_node      = Test-WuClusterNode -Services $services
        hyperv_host       = $services.ContainsKey('vmms')
    }
}

Read-FactGroup -Name 'services' -Reader {
    $table = @{}
    foreach ($name in $UpdateServices) {
        $policyType = $null
        if ($null -ne $policy -and $policy.ContainsKey($name)) {
            $policyType = $policy[$name]
        }
        if ($services.ContainsKey($name)) {
            $row = $services[$name]
            $table[$name] = @{
                state             = [string]$row.State
                start_type        = ConvertTo-WuStartType -Service $row
                policy_start_type = $policyType
            }
        }
        else {
            $table[$name] = @{ state = 'Absent'; start_type = 'Absent'; policy_start_type = $policyType }
        }
    }
    $table
}
$facts['policy_readable'] = $null -ne $policy

Read-FactGroup -Name 'clock' -Reader {
    $skew = $null
    if ($ControllerUtc) {
        $controller = [DateTime]::Parse($ControllerUtc, [Globalization.CultureInfo]::InvariantCulture, [Globalization.DateTimeStyles]::RoundtripKind)
        $skew = [math]::Round(([DateTime]::UtcNow - $controller.ToUniversalTime()).TotalSeconds, 1)
    }
    $w32timeState = 'Absent'
    if ($services.ContainsKey('w32time')) {
        $w32timeState = [string]$services['w32time'].State
    }
    $source = $null
    $lastSync = $null
    $statusExit = $null
    if ($w32timeState -eq 'Running') {
        # w32tm's labels are English on English systems only; the raw exit code is kept too.
        $query = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'w32tm.exe') -ArgumentList @('/query', '/status')
        $statusExit = $query.ExitCode
        foreach ($line in $query.Output) {
            if ($line -match '^\s*Source:\s*(.+?)\s*$') {
                $source = $Matches[1]
            }
            elseif ($line -match '^\s*Last Successful Sync Time:\s*(.+?)\s*$') {
                $lastSync = $Matches[1]
            }
        }
    }
    @{
        local_utc         = Get-WuNowUtc
        skew_seconds      = $skew
        w32time_state     = $w32timeState
        w32tm_exit_code   = $statusExit
        source            = $source
        last_sync         = $lastSync
    }
}

Read-FactGroup -Name 'disk' -Reader {
    $drive = @(Get-CimInstance -ClassName Win32_LogicalDisk | Where-Object -FilterScript { $_.DeviceID -eq $env:SystemDrive })[0]
    $free = [long]$drive.FreeSpace
    @{
        system_drive = [string]$env:SystemDrive
        free_bytes   = $free
        size_bytes   = [long]$drive.Size
        min_free_gb  = $MinFreeGB
        low          = ($free -lt ([long]$MinFreeGB * 1073741824))
    }
}

Read-FactGroup -Name 'folders' -Reader {
    $sd = Join-Path -Path $env:SystemRoot -ChildPath 'SoftwareDistribution'
    $catroot2 = Join-Path -Path $env:SystemRoot -ChildPath 'System32\catroot2'
    $backups = @(Get-ChildItem -LiteralPath $env:SystemRoot -Directory -Force |
            Where-Object -FilterScript { $_.Name -like 'SoftwareDistribution.wuremote-*' } |
            ForEach-Object -Process { $_.Name })
    @{
        software_distribution = @{
            exists         = (Test-Path -LiteralPath $sd)
            bytes          = Get-FolderBytes -Path $sd
            datastore_exists = (Test-Path -LiteralPath (Join-Path -Path $sd -ChildPath 'DataStore\DataStore.edb'))
            download_bytes = Get-FolderBytes -Path (Join-Path -Path $sd -ChildPath 'Download')
        }
        catroot2 = @{
            exists = (Test-Path -LiteralPath $catroot2)
            bytes  = Get-FolderBytes -Path $catroot2
        }
        wuremote_backups = $backups
    }
}

Read-FactGroup -Name 'pending_reboot' -Reader {
    , @(Get-WuPendingReboot)
}

Read-FactGroup -Name 'servicing' -Reader {
    # No TiWorker process is the normal case, not an error.
    $tiworker = @(Get-Process -Name 'TiWorker' -ErrorAction SilentlyContinue).Count -gt 0
    $pendingXml = Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')
    @{
        tiworker_running = $tiworker
        pending_xml      = $pendingXml
        in_progress      = ($tiworker -or $pendingXml)
    }
}

Read-FactGroup -Name 'update_source' -Reader {
    $wu = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate'
    $au = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU'
    $useWsus = [int](Get-WuRegistryValue -Path $au -Name 'UseWUServer' -Default 0) -eq 1
    $wsus = [string](Get-WuRegistryValue -Path $wu -Name 'WUServer' -Default '')
    $proxy = $null
    $proxyBypass = $null
    $winhttp = Get-WuRegistryValue -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Internet Settings\Connections' -Name 'WinHttpSettings'
    if ($null -ne $winhttp -and @($winhttp).Count -ge 16) {
        # WinHttpSettings: version(4) counter(4) flags(4) proxy length(4) proxy, bypass length(4) bypass.
        $bytes = [byte[]]@($winhttp)
        $length = [BitConverter]::ToInt32($bytes, 12)
        if ($length -gt 0) {
            $proxy = [Text.Encoding]::ASCII.GetString($bytes, 16, $length)
            $offset = 16 + $length
            if ($bytes.Length -ge $offset + 4) {
                $bypassLength = [BitConverter]::ToInt32($bytes, $offset)
                if ($bypassLength -gt 0) {
                    $proxyBypass = [Text.Encoding]::ASCII.GetString($bytes, $offset + 4, $bypassLength)
                }
            }
        }
    }
    $kind = 'windows-update'
    if ($services.ContainsKey('ccmexec')) {
        $kind = 'configmgr'
    }
    elseif ($useWsus -and $wsus) {
        $kind = 'wsus'
    }
    @{
        kind                    = $kind
        wsus_server             = $wsus
        wsus_status_server      = [string](Get-WuRegistryValue -Path $wu -Name 'WUStatusServer' -Default '')
        use_wsus                = $useWsus
        no_internet_wu          = [int](Get-WuRegistryValue -Path $wu -Name 'DoNotConnectToWindowsUpdateInternetLocations' -Default 0) -eq 1
        wu_access_disabled      = [int](Get-WuRegistryValue -Path $wu -Name 'DisableWindowsUpdateAccess' -Default 0) -eq 1
        no_auto_update          = [int](Get-WuRegistryValue -Path $au -Name 'NoAutoUpdate' -Default 0) -eq 1
        configmgr_client        = $services.ContainsKey('ccmexec')
        winhttp_proxy           = $proxy
        winhttp_proxy_bypass    = $proxyBypass
    }
}

Read-FactGroup -Name 'update_failures' -Reader {
    # 20 install failure, 25 search failure, 31 download failure (WindowsUpdateClient).
    $events = Get-RecentEvent -Filter @{
        LogName   = 'Microsoft-Windows-WindowsUpdateClient/Operational'
        Id        = @(20, 25, 31)
        StartTime = (Get-Date).AddDays(-30)
    }
    $rows = New-Object -TypeName System.Collections.Generic.List[object]
    foreach ($record in @($events | Sort-Object -Property TimeCreated -Descending | Select-Object -First 20)) {
        $hresult = $null
        if ([string]$record.Message -match '0x[0-9A-Fa-f]{8}') {
            $hresult = $Matches[0].ToUpperInvariant().Replace('0X', '0x')
        }
        $rows.Add(@{
                time_utc = $record.TimeCreated.ToUniversalTime().ToString('o')
                event_id = [int]$record.Id
                hresult  = $hresult
                message  = ([string]$record.Message).Trim()
            })
    }
    , $rows.ToArray()
}

Read-FactGroup -Name 'last_verify_ok_utc' -Reader {
    # Written by verify -RecordSuccess once a run's demanded repairs all passed; failures recorded
    # before it do not demand their repair again. ConvertFrom-Json in 5.1 keeps it a string.
    $record = Read-WuJsonFile -Path (Join-Path -Path (Get-WuStateRoot) -ChildPath 'verify-ok.json')
    if ($null -eq $record) {
        return $null
    }
    [string]$record.utc
}

Read-FactGroup -Name 'installed_kbs' -Reader {
    # Win32_QuickFixEngineering through Get-HotFix: an inventory KB already installed needs no install-kb.
    , @(Get-HotFix | ForEach-Object -Process { ([string]$_.HotFixID).ToUpperInvariant() } | Where-Object -FilterScript { $_ -match '^KB\d+$' } | Sort-Object -Unique)
}

Read-FactGroup -Name 'powershell' -Reader {
    # What decides whether our scheduled tasks can run: a Group Policy execution policy outranks
    # -ExecutionPolicy Bypass; Constrained Language (WDAC/AppLocker) refuses the .NET calls our
    # scripts make (Microsoft, about_Execution_Policies and about_Language_Modes).
    $policies = [ordered]@{}
    foreach ($row in @(Get-ExecutionPolicy -List)) {
        $policies[[string]$row.Scope] = [string]$row.ExecutionPolicy
    }
    @{
        language_mode      = Get-WuLanguageMode
        execution_policies = $policies
    }
}

Read-FactGroup -Name 'antivirus' -Reader {
    $products = 'unknown'
    if ([int]$os.ProductType -eq 1) {
        $products = @(Get-CimInstance -Namespace 'root\SecurityCenter2' -ClassName AntiVirusProduct | ForEach-Object -Process {
                @{ name = [string]$_.displayName; product_state = [int]$_.productState }
            })
    }
    $defender = @{ present = $false; realtime_enabled = $null; tamper_protected = $null; running_mode = $null }
    $mp = $null
    if (Get-Command -Name 'Get-MpComputerStatus' -ErrorAction SilentlyContinue) { # absent on hosts without the Defender module
        try {
            $mp = Get-MpComputerStatus
        }
        catch {
            # Defender's service not running (0x800106BA, a third-party antivirus active) must not
            # lose the whole antivirus group: Defender is there but not running.
            $defender = @{ present = $true; realtime_enabled = $false; tamper_protected = $null; running_mode = 'Not running' }
        }
    }
    if ($null -ne $mp) {
        $mode = $null
        if ($mp.PSObject.Properties.Name -contains 'AMRunningMode') {
            $mode = [string]$mp.AMRunningMode
        }
        $tamper = $null
        if ($mp.PSObject.Properties.Name -contains 'IsTamperProtected') {
            $tamper = [bool]$mp.IsTamperProtected
        }
        $defender = @{
            present          = [bool]$mp.AMServiceEnabled
            realtime_enabled = [bool]$mp.RealTimeProtectionEnabled
            tamper_protected = $tamper
            running_mode     = $mode
        }
    }
    @{ products = $products; defender = $defender }
}

Read-FactGroup -Name 'troubleshooter' -Reader {
    $pack = Join-Path -Path $env:SystemRoot -ChildPath 'diagnostics\system\WindowsUpdate'
    $module = $null -ne (Get-Module -ListAvailable -Name 'TroubleshootingPack')
    @{
        available = ($module -and (Test-Path -LiteralPath $pack))
        path      = $pack
    }
}

Read-FactGroup -Name 'unexpected_shutdowns_30d' -Reader {
    @(Get-RecentEvent -Filter @{ LogName = 'System'; Id = 6008; StartTime = (Get-Date).AddDays(-30) }).Count
}

$facts['elevated'] = Test-WuElevated
$facts['errors'] = $errors.ToArray()

$messages = @()
if (-not $facts['elevated']) {
    $messages += 'session is not elevated: repair steps will refuse (exit 5)'
}
Complete-WuStep -Step 'diagnose' -Status 'ok' -ExitCode 0 -Facts $facts -Messages $messages -ResultMarker $ResultMarker
