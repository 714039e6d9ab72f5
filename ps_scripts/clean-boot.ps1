# wuremote-script
# name: clean-boot
# version: 3
# reboot: always
# timeout: 600
# idempotent: yes
# detached: no
# opt-in: yes
# end-wuremote-script
<#
.SYNOPSIS
    Opt-in only: a clean boot for servers. Disables Win32 services whose binary is not
    Microsoft's, records their start types on the host, and arms a fail-safe that puts them
    back by a deadline.
.DESCRIPTION
    "Not Microsoft's" is decided from the service binary (the ServiceDll for svchost-hosted
    services): its Authenticode signer, else its company name. A binary that cannot be read is
    left alone. Never touched: drivers (not Win32 services), WinRM and every service it
    depends on, services of networking, storage/multipath, virtualisation guest tools and
    cloud agents, backup agents, EDR/antivirus (by signer or company, and by known service
    names), services launched protected, services a failover cluster manages on a node
    (Generic Service resources), everything a kept service depends on, and anything in
    -ExcludeServices.
    Order: record %ProgramData%\wuremote\failsafe\clean-boot.json, arm the fail-safe task
    \wuremote\wuremote-failsafe-clean-boot, then disable. A reboot makes it take effect.
    -ListOnly reports the candidates and changes nothing.
.NOTES
    Exit codes: 3010 services disabled, reboot to take effect; 0 -ListOnly, or clean boot
    already active (deadline extended), or nothing to disable; 1 failed (what was disabled
    is put back), 5 not elevated.
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [string[]]$ExcludeServices = @(),
    [ValidateRange(30, 2880)][int]$FailSafeMinutes = 240,
    [switch]$ListOnly
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'clean-boot' -RunId $RunId
Assert-WuElevated -Step 'clean-boot' -ResultMarker $ResultMarker

# Vendors whose services keep a server reachable, protected, backed up or its storage online.
$ProtectedCompanies = @(
    'VMware', 'Citrix', 'XenSource', 'Nutanix', 'Red Hat', 'QEMU', 'Amazon', 'Google', 'Oracle',
    'Veeam', 'Commvault', 'Veritas', 'Arcserve', 'Acronis', 'Rubrik', 'Cohesity', 'Dell', 'EMC', 'Hewlett', 'HPE',
    'NetApp', 'Pure Storage', 'Hitachi', 'IBM', 'Broadcom', 'Emulex', 'QLogic', 'Marvell', 'Mellanox', 'NVIDIA',
    'Intel', 'Cisco', 'Palo Alto', 'Fortinet', 'Zscaler', 'F5', 'Juniper',
    'CrowdStrike', 'SentinelOne', 'Sophos', 'Symantec', 'Broadcom', 'McAfee', 'Trellix', 'Trend Micro', 'Carbon Black',
    'Cylance', 'BlackBerry', 'ESET', 'Kaspersky', 'Bitdefender', 'Cybereason', 'Elastic', 'Tanium', 'Qualys', 'Rapid7', 'Tenable'
)
$ProtectedNames = @('winrm', 'vmtools', 'vgauthservice', 'vm3dservice', 'xenagent', 'xensvc', 'qemu-ga', 'amazonssmagent',
    'ec2launch', 'windowsazureguestagent', 'rdagent', 'waappagent', 'gceagent', 'googlevssagent', 'csfalconservice',
    'sentinelagent', 'sense', 'windefend', 'mpssvc', 'vss', 'swprv')

$facts = @{ list_only = [bool]$ListOnly }
$statePath = Get-WuFailSafePath -Kind 'clean-boot'
$deadline = [DateTime]::UtcNow.AddMinutes($FailSafeMinutes)

$existing = Read-WuJsonFile -Path $statePath
if ($null -ne $existing -and -not $ListOnly) {
    Complete-WuFailSafeExtended -Step 'clean-boot' -Kind 'clean-boot' -Existing $existing -DeadlineUtc $deadline `
        -RestoreFunction 'Restore-WuStartTypes' -Facts $facts -UndoneText 'start types put back' `
        -ExtendedText 'clean boot already active (recorded by wuremote); fail-safe deadline extended' -ResultMarker $ResultMarker
}

function Get-ServiceBinary {
    <# The file that runs a service: the image path, or the ServiceDll for svchost-hosted services. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][object]$Service)
    $path = [string]$Service.PathName
    $image = $null
    if ($path -match '^\s*"([^"]+)"') {
        $image = $Matches[1]
    }
    elseif ($path -match '^\s*(.+?\.(exe|dll|sys))(\s|$)') {
        $image = $Matches[1]
    }
    if ($image -and (Split-Path -Leaf $image) -eq 'svchost.exe') {
        $dll = Get-WuRegistryValue -Path ('HKLM:\SYSTEM\CurrentControlSet\Services\{0}\Parameters' -f $Service.Name) -Name 'ServiceDll'
        if ($dll) {
            $image = $dll
        }
    }
    if ($image) {
        $image = [Environment]::ExpandEnvironmentVariables($image)
    }
    $image
}

function Get-BinaryPublisher {
    <# Signer organisation if signed, else company name; $null when unreadable. #>
    [CmdletBinding()]
    param([string]$Path)
    if (-not $Path -or -not (Test-Path -LiteralPath $Path -PathType Leaf)) {
        return $null
    }
    $signature = Get-AuthenticodeSignature -LiteralPath $Path
    if ($signature.Status -eq 'Valid' -and $null -ne $signature.SignerCertificate) {
        if ($signature.SignerCertificate.Subject -match 'O="?([^",]+)') {
            return $Matches[1]
        }
    }
    $company = (Get-Item -LiteralPath $Path).VersionInfo.CompanyName
    if ($company) {
        return [string]$company
    }
    $null
}

function Get-DependencyClosure {
    <# A service and everything it depends on, lower-case names. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Name)
    $seen = New-Object -TypeName System.Collections.Generic.HashSet[string]
    $queue = New-Object -TypeName System.Collections.Generic.Queue[string]
    $queue.Enqueue($Name)
    while ($queue.Count -gt 0) {
        $current = $queue.Dequeue()
        if (-not $seen.Add($current.ToLowerInvariant())) {
            continue
        }
        # A dependency that is not installed has nothing to protect.
        $service = Get-Service -Name $current -ErrorAction SilentlyContinue
        if ($null -ne $service) {
            foreach ($dependency in @($service.ServicesDependedOn)) {
                $queue.Enqueue($dependency.Name)
            }
        }
    }
    , @($seen)
}

function Get-ClusterManagedService {
    <#
    On a failover cluster node, the services the cluster itself starts, stops and fails over:
    each Generic Service resource names one in its ServiceName private property (Microsoft,
    "Generic Service Private Properties"; "the cluster software will start the service":
    Add-ClusterGenericServiceRole). Disabled on this node, the cluster could not bring its role
    online here. Read through the cluster's WMI provider (root/MSCluster, MSCluster_Resource,
    PrivateProperties), never the cluster hive ("Never use the registry functions to access or
    change the cluster database": Microsoft, "Cluster Database"). Lower-case names; none off a
    node; a node whose resources cannot be read throws, and clean boot is refused.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][hashtable]$Services)
    if (-not (Test-WuClusterNode -Services $Services)) {
        return , @()
    }
    $names = foreach ($resource in @(Get-CimInstance -Namespace 'root/MSCluster' -ClassName 'MSCluster_Resource' -Filter "Type = 'Generic Service'")) {
        $serviceName = [string]$resource.PrivateProperties.ServiceName
        if ($serviceName) {
            $serviceName.ToLowerInvariant()
        }
    }
    , @($names)
}

$serviceTable = Get-WuServiceTable
try {
    $clusterManaged = Get-ClusterManagedService -Services $serviceTable
}
catch {
    Complete-WuStep -Step 'clean-boot' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('this host is a cluster node and the services its cluster manages could not be read ({0}); clean boot refused, nothing was changed' -f $_.Exception.Message))
}
$facts['cluster_managed'] = $clusterManaged
$exclude = @($ExcludeServices | ForEach-Object -Process { $_.ToLowerInvariant() })
$protected = @($ProtectedNames + (Get-DependencyClosure -Name 'WinRM') + $exclude)
$candidates = New-Object -TypeName System.Collections.Generic.List[object]
$kept = New-Object -TypeName System.Collections.Generic.List[object]
foreach ($service in @($serviceTable.Values | Sort-Object -Property Name)) {
    $name = ([string]$service.Name).ToLowerInvariant()
    $startType = ConvertTo-WuStartType -Service $service
    if ($startType -eq 'Disabled' -or $startType -eq 'Boot' -or $startType -eq 'System') {
        continue
    }
    $publisher = Get-BinaryPublisher -Path (Get-ServiceBinary -Service $service)
    if ($null -eq $publisher -or $publisher -match '^Microsoft') {
        continue
    }
    $reason = $null
    # A service launched protected (antimalware light, set by its vendor's ELAM-signed installer)
    # is security software whatever its vendor: kept. Its start type is not ours to change either
    # (Microsoft, "Protecting anti-malware services": only the service itself may reconfigure it).
    $launchProtected = [int](Get-WuRegistryValue -Path ('HKLM:\SYSTEM\CurrentControlSet\Services\{0}' -f $service.Name) -Name 'LaunchProtected' -Default 0)
    if ($protected -contains $name) {
        $reason = 'protected service'
    }
    elseif ($clusterManaged -contains $name) {
        $reason = 'cluster-managed service (a Generic Service resource of this node''s cluster)'
    }
    elseif ($launchProtected -gt 0) {
        $reason = ('launch-protected service (LaunchProtected {0})' -f $launchProtected)
    }
    else {
        foreach ($company in $ProtectedCompanies) {
            if ($publisher -like ('*{0}*' -f $company)) {
                $reason = ('protected vendor ({0})' -f $company)
                break
            }
        }
    }
    $entry = [ordered]@{
        name                = [string]$service.Name
        display_name        = [string]$service.DisplayName
        publisher           = $publisher
        original_start_type = $startType
        original_state      = [string]$service.State
    }
    if ($reason) {
        $entry['kept_because'] = $reason
        $kept.Add($entry)
    }
    else {
        $candidates.Add($entry)
    }
}
# Everything a kept service depends on is kept too: disabling it would stop the kept service.
$keptClosure = @($kept | ForEach-Object -Process { Get-DependencyClosure -Name $_.name } | ForEach-Object -Process { $_ })
foreach ($entry in @($candidates.ToArray())) {
    if ($keptClosure -contains ([string]$entry.name).ToLowerInvariant()) {
        $entry['kept_because'] = 'a kept service depends on it'
        $kept.Add($entry)
        $null = $candidates.Remove($entry)
    }
}
$facts['kept'] = $kept.ToArray()
$facts['services'] = $candidates.ToArray()

if ($ListOnly -or $candidates.Count -eq 0) {
    $message = 'nothing to disable: every Win32 service is Microsoft''s or protected'
    if ($ListOnly) {
        $message = ('{0} service(s) would be disabled; nothing changed (-ListOnly)' -f $candidates.Count)
    }
    Complete-WuStep -Step 'clean-boot' -Status 'ok' -ExitCode 0 -Facts $facts -Messages @($message) -ResultMarker $ResultMarker
}

# Record, arm the fail-safe, then change.
Write-WuJsonFile -Path $statePath -InputObject ([ordered]@{
        run_id       = $RunId
        taken_utc    = Get-WuNowUtc
        deadline_utc = $deadline.ToString('o')
        services     = $candidates.ToArray()
    })
try {
    $facts['failsafe_task'] = Register-WuFailSafe -Kind 'clean-boot' -DeadlineUtc $deadline -RestoreFunction 'Restore-WuStartTypes'
}
catch {
    # Register-WuFailSafe proved its task cannot run (and removed it): refuse before changing anything.
    Remove-Item -LiteralPath $statePath -Force
    Complete-WuStep -Step 'clean-boot' -Status 'failed' -ExitCode 1 -Facts $facts -ResultMarker $ResultMarker `
        -Messages @(('refused: {0}' -f $_.Exception.Message))
}
$facts['deadline_utc'] = $deadline.ToString('o')
$changes = New-Object -TypeName System.Collections.Generic.List[object]
$refused = New-Object -TypeName System.Collections.Generic.List[object]
try {
    foreach ($entry in $candidates) {
        try {
            Set-WuServiceStartType -Name $entry.name -StartType 'Disabled' -Confirm:$false
        }
        catch {
            # A service that refuses the change (access denied: protected by its own product) is
            # left as it is and reported; it is no reason to undo the others.
            $refused.Add([pscustomobject]@{ name = $entry.name; reason = $_.Exception.Message })
            continue
        }
        $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = $entry.name; from = $entry.original_start_type; to = 'Disabled' })
    }
    $facts['refused'] = $refused.ToArray()
}
catch {
    $failure = $_.Exception.Message
    $facts['restored'] = Restore-WuStartTypes -Reason 'clean-boot failed'
    if ($null -eq (Read-WuJsonFile -Path $statePath)) {
        $null = Unregister-WuFailSafe -Kind 'clean-boot'
    }
    Complete-WuStep -Step 'clean-boot' -Status 'failed' -ExitCode 1 -Facts $facts -Changes $changes.ToArray() -ResultMarker $ResultMarker `
        -Messages @(('clean boot failed and was undone: {0}' -f $failure))
}
Complete-WuStep -Step 'clean-boot' -Status 'reboot-required' -ExitCode 3010 -Facts $facts -Changes $changes.ToArray() -RebootRequired $true `
    -Messages @(('{0} service(s) disabled until clean-boot-restore or {1} UTC; reboot to take effect' -f $changes.Count, $deadline.ToString('yyyy-MM-dd HH:mm:ss', [Globalization.CultureInfo]::InvariantCulture))) `
    -ResultMarker $ResultMarker
