# wuremote prelude: inserted by the controller where a step script says "# wuremote-prelude".
# It gives every step the same transcript, result and exit-code handling, and the helpers
# several steps share (elevation, registry reads, service start types, native commands,
# the detached-step protocol, on-host fail-safes).
#
# Exit codes: 0 ok, 3010 ok and reboot needed, 1 failed, 2 not applicable, 5 not elevated,
# 4 refused (the host is busy: servicing in progress, lock held by another run, another
# instance of the tool running); a script documents any other code it uses.
#
# Detached steps (dism, sfc, verify, install-kb; header "detached: yes"):
#   A process started from a WinRM shell dies with the shell's job object, so a long step
#   runs as a scheduled task as SYSTEM. The step script is the body that runs inside the
#   task; three short scripts drive it:
#     detached-start   stages the body's payload (-Payload, checked against -PayloadSha256)
#                      and its parameters (-ParametersJson, never pasted into code) under
#                      %ProgramData%\wuremote\runs\<run-id>\<step>\, writes the constant
#                      runner.ps1 (Get-WuDetachedRunnerText), registers the task
#                      \wuremote\wuremote-<run-id>-<step> (SYSTEM, highest, no time limit)
#                      and starts it. A task already running for that run and step is
#                      re-attached to, never restarted.
#     detached-poll    reads status.json (state, pid, started, percent, exit_code,
#                      finished, boot_utc), marks a step whose process vanished or whose
#                      host rebooted as "interrupted" (never as success), returns the
#                      body's result (result.json) once finished and a slice of the
#                      transcript from an offset.
#     detached-cleanup unregisters the task and removes the staged payload once the step
#                      is no longer running; it never stops a running task.
#   Inside the task the body reports progress with Set-WuStepProgress; the runner writes
#   the body's exit code and result object. Nothing here ever kills DISM or sfc.
#
# Fail-safes (av-pause, clean-boot): what was changed is recorded under
#   %ProgramData%\wuremote\failsafe\<kind>.json and a SYSTEM task \wuremote\wuremote-failsafe-<kind>
#   restores it at a deadline (also at start-up once the deadline has passed) unless the
#   matching restore step (av-resume, clean-boot-restore) runs first and removes it.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2.0

$script:WuNamePattern = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'
$script:WuTaskPath = '\wuremote\'

function Get-WuStateRoot {
    [CmdletBinding()]
    param()
    Join-Path -Path $env:ProgramData -ChildPath 'wuremote'
}

function Start-WuTranscript {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Step,
        [string]$RunId = ''
    )
    # Every step starts here. Under Constrained Language (WDAC/AppLocker) the .NET calls the steps
    # make (System.IO.File, Console, COM) fail half-way (Microsoft, about_Language_Modes), so a
    # step refuses first, through code that language mode allows; $ResultMarker is the calling
    # step's own parameter.
    $languageMode = Get-WuLanguageMode
    if ($languageMode -ne 'FullLanguage') {
        Complete-WuStep -Step $Step -Status 'failed' -ExitCode 1 -ResultMarker $ResultMarker -Facts @{ language_mode = $languageMode } `
            -Messages @(('PowerShell runs in {0} on this host (WDAC/AppLocker): wuremote''s steps need FullLanguage; nothing was changed' -f $languageMode))
    }
    $runPart = 'adhoc'
    if ($RunId) { $runPart = $RunId }
    $folder = Join-Path -Path (Get-WuStateRoot) -ChildPath ('runs\{0}\{1}' -f $runPart, $Step)
    $null = New-Item -ItemType Directory -Path $folder -Force
    $path = Join-Path -Path $folder -ChildPath 'transcript.log'
    try {
        $null = Start-Transcript -Path $path -Append
    }
    catch {
        # A transcript already running in this session (nested call) must not fail the step.
        Write-Verbose ('transcript not started: {0}' -f $_.Exception.Message)
    }
    $path
}

function Complete-WuStep {
    <# Emits the one result object of a step (and, for the WinRS transport, the marked JSON line) and exits
       (or, in a chain of steps, ends this one and lets the next run). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Step,
        [Parameter(Mandatory = $true)][ValidateSet('ok', 'reboot-required', 'failed', 'not-applicable', 'not-elevated')][string]$Status,
        [Parameter(Mandatory = $true)][int]$ExitCode,
        [hashtable]$Facts = @{},
        [object[]]$Changes = @(),
        [string[]]$Messages = @(),
        [bool]$RebootRequired = $false,
        [string]$ResultMarker = ''
    )
    $result = [pscustomobject]@{
        wuremote_result = 1
        step            = $Step
        status          = $Status
        exit_code       = $ExitCode
        reboot_required = $RebootRequired
        changes         = @($Changes)
        facts           = $Facts
        messages        = @($Messages)
    }
    if ($ResultMarker -and (Get-WuLanguageMode) -ne 'FullLanguage') {
        # [Console] is not callable in Constrained Language: the line goes through the output stream.
        Write-Output ('{0} {1}' -f $ResultMarker, ($result | ConvertTo-Json -Compress -Depth 8))
    }
    elseif ($ResultMarker) {
        [Console]::Out.WriteLine(('{0} {1}' -f $ResultMarker, ($result | ConvertTo-Json -Compress -Depth 8)))
    }
    else {
        $result
    }
    try {
        $null = Stop-Transcript
    }
    catch {
        Write-Verbose 'no transcript to stop'
    }
    # SilentlyContinue: outside a chain the variable does not exist, which only means "not chained".
    if (Get-Variable -Name 'WuremoteChain' -Scope Global -ValueOnly -ErrorAction SilentlyContinue) {
        # Chained (_psrp_chain.ps1): `exit` would end the whole pipeline, so the step ends by leaving the
        # chain's loop labelled WuremoteStep; a break looks up the call stack for its loop (Microsoft,
        # about_Break), and its label may be an expression, here a string (PowerShell Language
        # Specification 3.0, 8.5.1); the next step of the chain runs in the same pipeline.
        $global:WuremoteChainResult = $result
        break 'WuremoteStep'
    }
    exit $ExitCode
}

function Test-WuElevated {
    <# True when the session runs with an administrator token (UAC-filtered tokens are not). #>
    [CmdletBinding()]
    param()
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object -TypeName Security.Principal.WindowsPrincipal -ArgumentList $identity
    $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Assert-WuElevated {
    <# Ends the step with exit code 5 when the session is not elevated. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Step,
        [string]$ResultMarker = ''
    )
    if (-not (Test-WuElevated)) {
        Complete-WuStep -Step $Step -Status 'not-elevated' -ExitCode 5 -ResultMarker $ResultMarker `
            -Messages @('this step needs an elevated (administrator) session; nothing was changed')
    }
}

function Get-WuLanguageMode {
    <# This session's language mode (FullLanguage, ConstrainedLanguage under WDAC/AppLocker). #>
    [CmdletBinding()]
    param()
    [string]$ExecutionContext.SessionState.LanguageMode
}

function Test-WuName {
    <# Run ids and step names end up in paths and task names: letters, digits, dot, dash, underscore. #>
    [CmdletBinding()]
    param([AllowEmptyString()][string]$Value)
    $Value -match $script:WuNamePattern
}

function Get-WuRegistryValue {
    <# One registry value, or -Default when the key or the value is absent. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][string]$Name,
        [object]$Default = $null
    )
    if (-not (Test-Path -LiteralPath $Path)) {
        return $Default
    }
    $item = Get-ItemProperty -LiteralPath $Path
    if ($item.PSObject.Properties.Name -contains $Name) {
        return $item.$Name
    }
    $Default
}

function Get-WuNowUtc {
    [CmdletBinding()]
    param()
    [DateTime]::UtcNow.ToString('o')
}

function Get-WuLastBootUtc {
    [CmdletBinding()]
    param()
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $os.LastBootUpTime.ToUniversalTime().ToString('o')
}

function Get-WuUpdateAgentRebootRequired {
    <#
    The update agent's own answer (Microsoft.Update.SystemInfo.RebootRequired, which Ansible's
    win_updates reads after installing: ansible.windows plugins/modules/win_updates.ps1). $false
    when the agent cannot be asked (COM blocked, e.g. under Constrained Language): the registry
    signals beside it still speak.
    #>
    [CmdletBinding()]
    param()
    try {
        [bool](New-Object -ComObject 'Microsoft.Update.SystemInfo').RebootRequired
    }
    catch {
        Write-Verbose ('update agent reboot state not read: {0}' -f $_.Exception.Message)
        $false
    }
}

function Get-WuConfigMgrRebootPending {
    <#
    ConfigMgr's reboot state: CCM_ClientUtilities.DetermineIfRebootPending (ReturnValue 0 and
    RebootPending or IsHardRebootPending), as DSC's xPendingReboot reads it
    (dsccommunity/xPendingReboot MSFT_xPendingReboot.psm1). $false without a ConfigMgr client.
    #>
    [CmdletBinding()]
    param()
    try {
        $answer = Invoke-CimMethod -Namespace 'root\ccm\ClientSDK' -ClassName 'CCM_ClientUtilities' -MethodName 'DetermineIfRebootPending'
        ([int]$answer.ReturnValue -eq 0) -and ([bool]$answer.RebootPending -or [bool]$answer.IsHardRebootPending)
    }
    catch {
        # No ConfigMgr client (the namespace is absent) is the common case.
        Write-Verbose ('ConfigMgr reboot state not read: {0}' -f $_.Exception.Message)
        $false
    }
}

function Get-WuPendingReboot {
    <#
    The pending-reboot signals that earn a restart, by name (empty when none): CBS RebootPending,
    Windows Update RebootRequired (registry or the agent's SystemInfo), ConfigMgr's reboot state
    and a pending computer rename (the checks of DSC's xPendingReboot). PendingFileRenameOperations
    is not one of them: security agents and installers rewrite it at every boot, so a host that
    restarts for it restarts forever (chocolatey/choco#1768; imabdk/Toast-Notification-Script#40).
    Test-WuPendingFileRename reports it on its own.
    #>
    [CmdletBinding()]
    param()
    $signals = New-Object -TypeName System.Collections.Generic.List[string]
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
        $signals.Add('cbs-reboot-pending')
    }
    if ((Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') -or (Get-WuUpdateAgentRebootRequired)) {
        $signals.Add('wu-reboot-required')
    }
    if (Get-WuConfigMgrRebootPending) {
        $signals.Add('configmgr-reboot-pending')
    }
    $active = Get-WuRegistryValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName' -Name 'ComputerName' -Default ''
    $pending = Get-WuRegistryValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName' -Name 'ComputerName' -Default ''
    if ($active -ne $pending) {
        $signals.Add('pending-computer-rename')
    }
    , $signals.ToArray()
}

function Test-WuPendingFileRename {
    <# True when PendingFileRenameOperations holds entries: reported, never a reason to restart (see Get-WuPendingReboot). #>
    [CmdletBinding()]
    param()
    $renames = Get-WuRegistryValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations'
    $null -ne $renames -and @($renames | Where-Object -FilterScript { $_ }).Count -gt 0
}

function Wait-WuServicingIdle {
    <#
    Waits (bounded) until none of -ProcessName runs; returns '' then, or what still runs at the
    deadline. Busy is decided from real signals: another DISM (DismHost) or sfc, never TiWorker
    alone. TiWorker is the Windows Modules Installer's worker, started on demand by
    TrustedInstaller for any servicing query (an update scan included, so verify's own search
    starts it) and left to idle out; a running TiWorker with no WinSxS\pending.xml is no pending
    operation. The callers check pending.xml themselves.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string[]]$ProcessName,
        [ValidateRange(0, 3600)][int]$WaitSeconds = 120
    )
    $deadline = [DateTime]::UtcNow.AddSeconds($WaitSeconds)
    while ($true) {
        # None of them running is the normal answer, not an error.
        $running = @(Get-Process -Name $ProcessName -ErrorAction SilentlyContinue)
        if ($running.Count -eq 0) {
            return ''
        }
        $what = ($running | ForEach-Object -Process { '{0} ({1})' -f $_.ProcessName, $_.Id }) -join ', '
        if ([DateTime]::UtcNow -ge $deadline) {
            return $what
        }
        Write-Verbose ('waiting for {0} to end' -f $what)
        Start-Sleep -Seconds 5
    }
}

function Invoke-WuNative {
    <#
    Runs a native program with an argument array (never a command string) and returns its exit
    code and output lines. Windows PowerShell 5.1 turns redirected stderr lines into error
    records that 'Stop' would throw on, so the preference is relaxed in this scope only.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$FilePath,
        [string[]]$ArgumentList = @(),
        [scriptblock]$OnLine = $null
    )
    $ErrorActionPreference = 'Continue'
    $lines = New-Object -TypeName System.Collections.Generic.List[string]
    & $FilePath @ArgumentList 2>&1 | ForEach-Object -Process {
        $line = [string]$_
        $lines.Add($line)
        Write-Verbose $line
        if ($null -ne $OnLine) {
            $null = & $OnLine $line
        }
    }
    $code = $LASTEXITCODE
    [pscustomobject]@{
        ExitCode = [int]$code
        Output   = $lines.ToArray()
    }
}

function Get-WuSystemTool {
    <# Full path of a tool under System32 (a 32-bit host process would otherwise see SysWOW64). #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Name)
    $native = Join-Path -Path $env:SystemRoot -ChildPath ('Sysnative\{0}' -f $Name)
    if (Test-Path -LiteralPath $native) {
        return $native
    }
    Join-Path -Path $env:SystemRoot -ChildPath ('System32\{0}' -f $Name)
}

function ConvertTo-WuHexHResult {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][long]$Code)
    '0x{0:X8}' -f ($Code -band [long]4294967295)
}

function Get-WuInnermostException {
    <# The exception at the bottom of an error record's chain: a .NET call's own exception arrives
    wrapped (MethodInvocationException), so its type is read here, not matched by a typed catch. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][System.Management.Automation.ErrorRecord]$ErrorRecord)
    $exception = $ErrorRecord.Exception
    while ($null -ne $exception.InnerException) {
        $exception = $exception.InnerException
    }
    $exception
}

function Write-WuTextFile {
    <#
    Writes text atomically: a temp file, then one [IO.File]::Replace (or Move when the file is new).
    Move-Item -Force is not atomic: on an existing destination Windows PowerShell's
    FileSystemProvider.MoveFileInfoItem deletes it and then moves, so a reader in between finds no
    file. Replace fails while a reader holds the file without delete sharing (Get-Content does):
    retried for a bounded time. .ps1 files get a BOM so Windows PowerShell 5.1 reads them as UTF-8.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][AllowEmptyString()][string]$Text,
        [switch]$Bom,
        [ValidateRange(1, 600)][int]$Attempts = 100
    )
    $encoding = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList ([bool]$Bom)
    $temp = '{0}.tmp-{1}' -f $Path, $PID
    [System.IO.File]::WriteAllText($temp, $Text, $encoding)
    for ($attempt = 1; $true; $attempt++) {
        try {
            if ([System.IO.File]::Exists($Path)) {
                # [NullString]::Value: PowerShell would pass $null to a string parameter as ''.
                [System.IO.File]::Replace($temp, $Path, [NullString]::Value)
            }
            else {
                [System.IO.File]::Move($temp, $Path)
            }
            return
        }
        catch {
            $inner = Get-WuInnermostException -ErrorRecord $_
            $sharing = $inner -is [System.IO.IOException] -or $inner -is [System.UnauthorizedAccessException]
            if (-not $sharing -or $attempt -ge $Attempts) {
                [System.IO.File]::Delete($temp)
                throw
            }
            Start-Sleep -Milliseconds 100
        }
    }
}

function Write-WuJsonFile {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][object]$InputObject
    )
    Write-WuTextFile -Path $Path -Text ($InputObject | ConvertTo-Json -Depth 8)
}

function Read-WuSharedText {
    <#
    A file's text, opened with ReadWrite and Delete sharing so that a writer's Replace never fails
    (nor waits) because of this reader; $null when the file does not exist. A sharing violation
    from a writer that did not share is retried for a bounded time.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [ValidateRange(1, 600)][int]$Attempts = 50
    )
    $share = [System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete
    for ($attempt = 1; $true; $attempt++) {
        try {
            $stream = [System.IO.FileStream]::new($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share)
        }
        catch {
            $inner = Get-WuInnermostException -ErrorRecord $_
            if ($inner -is [System.IO.FileNotFoundException] -or $inner -is [System.IO.DirectoryNotFoundException]) {
                return $null
            }
            if (-not ($inner -is [System.IO.IOException]) -or $attempt -ge $Attempts) {
                throw
            }
            Start-Sleep -Milliseconds 100
            continue
        }
        $reader = New-Object -TypeName System.IO.StreamReader -ArgumentList @($stream, [System.Text.Encoding]::UTF8)
        try {
            return $reader.ReadToEnd()
        }
        finally {
            $reader.Dispose()
        }
    }
}

function Read-WuJsonFile {
    <# The parsed JSON file, or $null when it does not exist (read with delete sharing: Read-WuSharedText). #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    $text = Read-WuSharedText -Path $Path
    if ($null -eq $text) {
        return $null
    }
    $text | ConvertFrom-Json
}

function ConvertTo-WuHashtable {
    <# A ConvertFrom-Json object as a hashtable (one level: what parameter splatting needs). #>
    [CmdletBinding()]
    param([object]$InputObject)
    $table = @{}
    if ($null -eq $InputObject) {
        return $table
    }
    foreach ($property in $InputObject.PSObject.Properties) {
        $value = $property.Value
        if ($value -is [System.Array]) {
            $value = [string[]]@($value | ForEach-Object -Process { [string]$_ })
        }
        $table[$property.Name] = $value
    }
    $table
}

function Get-WuServiceTable {
    <# Every Win32 service and driver row (Win32_Service) by lower-case name: one query, one source of start types. #>
    [CmdletBinding()]
    param()
    $table = @{}
    foreach ($row in @(Get-CimInstance -ClassName Win32_Service)) {
        $table[([string]$row.Name).ToLowerInvariant()] = $row
    }
    $table
}

function Test-WuClusterNode {
    <#
    Whether this host is a failover cluster node, not merely one with the feature installed.
    Installing Failover Clustering adds the Cluster Service (ClusSvc) without making the host a
    node; a node holds the cluster database, "a set of keys ... under HKEY_LOCAL_MACHINE"
    (Microsoft, "Cluster Database", learn.microsoft.com/previous-versions/windows/desktop/mscs/
    cluster-database), and its ClusSvc starts at boot. Assumed, only Windows can confirm: the
    feature alone leaves ClusSvc Disabled, and HKLM\Cluster is loaded while ClusSvc runs on a
    node. So: ClusSvc present and either not Disabled or the cluster hive loaded.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][hashtable]$Services)
    $clussvc = $Services['clussvc']
    if ($null -eq $clussvc) {
        return $false
    }
    ([string]$clussvc.StartMode -ne 'Disabled') -or (Test-Path -LiteralPath 'HKLM:\Cluster')
}

function ConvertTo-WuStartType {
    <# Automatic, AutomaticDelayed, Manual, Disabled, Boot, System or Unknown from a Win32_Service row. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][object]$Service)
    $delayed = $false
    if ($Service.PSObject.Properties.Name -contains 'DelayedAutoStart') {
        $delayed = [bool]$Service.DelayedAutoStart
    }
    elseif ([string]$Service.StartMode -eq 'Auto') {
        # Win32_Service has no DelayedAutoStart before Windows Server 2016 (issue 13): read the
        # service's DelayedAutostart value, which `sc.exe config <name> start= delayed-auto` sets,
        # so a delayed start is recorded, and restored, exactly on 2012 R2.
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\{0}' -f $Service.Name
        $delayed = [int](Get-WuRegistryValue -Path $key -Name 'DelayedAutostart' -Default 0) -eq 1
    }
    switch ([string]$Service.StartMode) {
        'Auto' {
            if ($delayed) {
                return 'AutomaticDelayed'
            }
            return 'Automatic'
        }
        'Manual' { return 'Manual' }
        'Disabled' { return 'Disabled' }
        'Boot' { return 'Boot' }
        'System' { return 'System' }
        default { return 'Unknown' }
    }
}

function Get-WuPolicyStartTypes {
    <#
    Services whose start type Group Policy sets (Security Settings > System Services), from the
    RSoP data: lower-case name -> start type. $null when RSoP data cannot be read.
    #>
    [CmdletBinding()]
    param()
    $map = @{ 2 = 'Automatic'; 3 = 'Manual'; 4 = 'Disabled' }
    try {
        $rows = @(Get-CimInstance -Namespace 'root\rsop\computer' -ClassName RSOP_SystemService)
    }
    catch {
        Write-Verbose ('RSoP data not readable: {0}' -f $_.Exception.Message)
        return $null
    }
    $table = @{}
    foreach ($row in $rows) {
        $mode = 'Unknown'
        if ($map.ContainsKey([int]$row.StartupMode)) {
            $mode = $map[[int]$row.StartupMode]
        }
        $table[([string]$row.Service).ToLowerInvariant()] = $mode
    }
    $table
}

function Set-WuServiceStartType {
    <# Sets a start type through the service control manager (sc.exe for delayed start, which Set-Service 5.1 lacks). #>
    [CmdletBinding(SupportsShouldProcess = $true)]
    param(
        [Parameter(Mandatory = $true)][string]$Name,
        [Parameter(Mandatory = $true)][ValidateSet('Automatic', 'AutomaticDelayed', 'Manual', 'Disabled')][string]$StartType
    )
    if (-not $PSCmdlet.ShouldProcess($Name, ('set start type {0}' -f $StartType))) {
        return
    }
    $scValue = @{ Automatic = 'auto'; AutomaticDelayed = 'delayed-auto'; Manual = 'demand'; Disabled = 'disabled' }[$StartType]
    $run = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'sc.exe') -ArgumentList @('config', $Name, 'start=', $scValue)
    if ($run.ExitCode -ne 0) {
        throw ('could not set {0} to {1}: sc.exe exit {2}: {3}' -f $Name, $StartType, $run.ExitCode, ($run.Output -join ' '))
    }
}

function Get-WuRunFolder {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$RunId,
        [Parameter(Mandatory = $true)][string]$Step
    )
    Join-Path -Path (Get-WuStateRoot) -ChildPath ('runs\{0}\{1}' -f $RunId, $Step)
}

function Get-WuDetachedTaskName {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$RunId,
        [Parameter(Mandatory = $true)][string]$Step
    )
    'wuremote-{0}-{1}' -f $RunId, $Step
}

function Set-WuStepProgress {
    <#
    Inside a detached task: records percent done in status.json, and with -Message what is being
    done now (install-updates: "3/7 KB5034441"); outside one it does nothing.
    #>
    [CmdletBinding()]
    param(
        [string]$RunId = '',
        [Parameter(Mandatory = $true)][string]$Step,
        [Parameter(Mandatory = $true)][ValidateRange(0, 100)][int]$Percent,
        [string]$Message = ''
    )
    if (-not $RunId -or -not (Test-WuName -Value $RunId)) {
        return
    }
    $statusPath = Join-Path -Path (Get-WuRunFolder -RunId $RunId -Step $Step) -ChildPath 'status.json'
    try {
        $status = Read-WuJsonFile -Path $statusPath
        if ($null -eq $status -or $status.state -ne 'running') {
            return
        }
        $known = @($status.PSObject.Properties | ForEach-Object -Process { $_.Name })
        $sameMessage = (-not $Message) -or (($known -contains 'message') -and $status.message -eq $Message)
        if ($status.percent -eq $Percent -and $sameMessage) {
            return
        }
        $status.percent = $Percent
        if ($Message) {
            $status | Add-Member -NotePropertyName 'message' -NotePropertyValue $Message -Force
        }
        Write-WuJsonFile -Path $statusPath -InputObject $status
    }
    catch {
        # Progress is advisory: a poll reading the file at this instant must never fail the step.
        Write-Verbose ('progress not recorded: {0}' -f $_.Exception.Message)
    }
}

function Protect-WuStateRoot {
    <#
    %ProgramData% lets any user create folders; a SYSTEM task runs files from ours, so only
    SYSTEM and Administrators may hold it: owner Administrators and an explicit ACL for SYSTEM
    and Administrators alone, inheritance from %ProgramData% cut
    (ObjectSecurity.SetAccessRuleProtection($true, $false): protected, inherited rules not
    kept; Microsoft, learn.microsoft.com/dotnet/api/system.security.accesscontrol.
    objectsecurity.setaccessruleprotection). That reset covers only the folder itself: a child a
    user made before it (failsafe\, runs\) keeps its own owner and explicit rules, and "an
    object's owner implicitly has WRITE_DAC access" (Microsoft, "Owner of a New Object"), so
    its maker could still edit restore-*.ps1 or runner.ps1. Every child is therefore checked
    (Get-WuUnsafeStateItem) and the step fails closed, changing nothing, when one is not ours.
    A reparse point (junction or symbolic link, FileAttributes.ReparsePoint) is refused
    anywhere in the tree: Windows PowerShell's Remove-Item -Recurse follows one and deletes
    what it points at (PowerShell/PowerShell#621), and a write through one lands elsewhere.
    #>
    [CmdletBinding()]
    param()
    $root = Get-WuStateRoot
    if ([System.IO.Directory]::Exists($root) -and
        ([System.IO.File]::GetAttributes($root) -band [System.IO.FileAttributes]::ReparsePoint)) {
        throw ('the state folder {0} is a junction or symbolic link; refused, nothing was changed. Remove the link (rmdir {0}; the folder it points at is kept) and run again' -f $root)
    }
    $null = New-Item -ItemType Directory -Path $root -Force
    $acl = New-Object -TypeName System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $admins = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList 'S-1-5-32-544'
    $system = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList 'S-1-5-18'
    $acl.SetOwner($admins)
    foreach ($sid in @($system, $admins)) {
        $rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList @(
            $sid, 'FullControl', 'ContainerInherit,ObjectInherit', 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $root -AclObject $acl
    $unsafe = @(Get-WuUnsafeStateItem -Root $root)
    if ($unsafe.Count -gt 0) {
        $shown = @($unsafe | Select-Object -First 5) -join '; '
        throw ('the state folder {0} holds items that are not only SYSTEM''s and Administrators'': {1}; refused (fail closed), nothing was changed. Check what they hold, delete them and run again' -f $root, $shown)
    }
    $root
}

function Get-WuUnsafeStateItem {
    <#
    Each item under the state folder that a non-administrator could change, as "path: why": a
    reparse point, an owner other than SYSTEM, Administrators, TrustedInstaller or this
    session's own account, or an allow rule granting any write, delete or permission right to
    anyone else (inherit-only rules too: they pass to what we create inside). Reparse points
    are never followed.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Root)
    $trusted = @('S-1-5-18', 'S-1-5-32-544', 'S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464',
        [System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value)
    # CREATOR OWNER (S-1-3-0) only stands for whoever creates a child: ourselves, in here.
    $trustedRules = $trusted + @('S-1-3-0')
    # WriteData, AppendData, WriteExtendedAttributes, DeleteSubdirectoriesAndFiles,
    # WriteAttributes, Delete, ChangePermissions, TakeOwnership, GENERIC_ALL, GENERIC_WRITE
    # (Microsoft, FileSystemRights; "Generic Access Rights").
    $writeMask = 0x500d0156
    $sidType = [System.Security.Principal.SecurityIdentifier]
    $pending = New-Object -TypeName System.Collections.Generic.Stack[string]
    $pending.Push($Root)
    while ($pending.Count -gt 0) {
        $folder = $pending.Pop()
        foreach ($item in @(Get-ChildItem -LiteralPath $folder -Force)) {
            $path = $item.FullName
            if ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint) {
                '{0}: a junction or symbolic link' -f $path
                continue
            }
            $acl = Get-Acl -LiteralPath $path
            $owner = $acl.GetOwner($sidType)
            if ($null -eq $owner -or $trusted -notcontains $owner.Value) {
                '{0}: owned by {1}' -f $path, $(if ($null -eq $owner) { 'nobody' } else { $owner.Value })
                continue
            }
            $writers = @(foreach ($rule in $acl.GetAccessRules($true, $true, $sidType)) {
                    if ($rule.AccessControlType -eq 'Allow' -and ([int64]$rule.FileSystemRights -band $writeMask) -and
                        $trustedRules -notcontains $rule.IdentityReference.Value) {
                        $rule.IdentityReference.Value
                    }
                })
            if ($writers.Count -gt 0) {
                '{0}: writable by {1}' -f $path, (($writers | Select-Object -Unique) -join ', ')
                continue
            }
            if ($item.PSIsContainer) {
                $pending.Push($path)
            }
        }
    }
}

function Get-WuDetachedState {
    <#
    status.json of a detached step with its effective state: queued, running, finished, or
    interrupted (its process is gone or the host rebooted since it started without it
    finishing). $null when the step was never started. Reads only; never stops anything.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$RunId,
        [Parameter(Mandatory = $true)][string]$Step
    )
    $statusPath = Join-Path -Path (Get-WuRunFolder -RunId $RunId -Step $Step) -ChildPath 'status.json'
    $status = Read-WuJsonFile -Path $statusPath
    if ($null -eq $status) {
        return $null
    }
    $taskName = Get-WuDetachedTaskName -RunId $RunId -Step $Step
    # No task is a normal answer here (cleaned up, or never registered).
    $task = Get-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName -ErrorAction SilentlyContinue
    $taskState = 'absent'
    if ($null -ne $task) {
        $taskState = [string]$task.State
    }
    $effective = [string]$status.state
    $reason = ''
    if ($effective -eq 'running') {
        $bootNow = Get-WuLastBootUtc
        # A vanished process is exactly what this check looks for.
        $process = Get-Process -Id ([int]$status.pid) -ErrorAction SilentlyContinue
        # Windows reuses process ids: a live process with the runner's id but another start time
        # is not the runner (Process.StartTime). Unreadable start time: keep the process.
        $recordedStart = $null
        if ($status.PSObject.Properties.Name -contains 'pid_started' -and $status.pid_started) {
            $recordedStart = ([DateTime]::Parse([string]$status.pid_started)).ToUniversalTime()
        }
        if ($null -ne $process -and $null -ne $recordedStart) {
            try {
                $actualStart = ([DateTime]$process.StartTime).ToUniversalTime()
                if ([math]::Abs(($actualStart - $recordedStart).TotalSeconds) -gt 2) {
                    $process = $null
                }
            }
            catch {
                Write-Verbose ('start time of process {0} not read: {1}' -f $status.pid, $_.Exception.Message)
            }
        }
        if ($status.boot_utc -and ([DateTime]::Parse($bootNow)).ToUniversalTime() -gt ([DateTime]::Parse([string]$status.boot_utc)).ToUniversalTime().AddMinutes(1)) {
            $effective = 'interrupted'
            $reason = 'the host restarted while the step ran'
        }
        elseif ($null -eq $process -and $taskState -ne 'Running') {
            $effective = 'interrupted'
            $reason = 'the step process ended without recording a result'
        }
    }
    elseif ($effective -eq 'queued' -and $taskState -ne 'Running' -and $taskState -ne 'Queued') {
        $queuedAt = ([DateTime]::Parse([string]$status.queued)).ToUniversalTime()
        if ([DateTime]::UtcNow -gt $queuedAt.AddMinutes(5)) {
            $effective = 'interrupted'
            $reason = 'the task did not start within 5 minutes'
        }
    }
    [pscustomobject]@{
        status      = $status
        state       = $effective
        reason      = $reason
        task_name   = $taskName
        task_state  = $taskState
        status_path = $statusPath
    }
}

function Get-WuOtherInstall {
    <#
    Another run's install-kb or install-updates task, queued or running ("STEP of run RUN"): the two
    never run at once on a host, and neither is ever stopped for the other (both wait, bounded).
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][AllowEmptyString()][string]$RunId)
    $runs = Join-Path -Path (Get-WuStateRoot) -ChildPath 'runs'
    if (-not (Test-Path -LiteralPath $runs)) {
        return
    }
    foreach ($folder in Get-ChildItem -LiteralPath $runs -Directory) {
        if ($folder.Name -eq $RunId) {
            continue
        }
        foreach ($step in @('install-kb', 'install-updates')) {
            $current = Get-WuDetachedState -RunId $folder.Name -Step $step
            if ($null -ne $current -and ($current.state -eq 'running' -or $current.state -eq 'queued')) {
                '{0} of run {1}' -f $step, $folder.Name
            }
        }
    }
}

function Get-WuComHResult {
    <# The HRESULT behind a COM call's exception (the innermost one that carries it): the update agent's errors. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][System.Exception]$Exception)
    $current = $Exception
    while ($null -ne $current.InnerException -and $current -isnot [System.Runtime.InteropServices.COMException]) {
        $current = $current.InnerException
    }
    [long]$current.HResult
}

function Get-WuDetachedRunnerText {
    <#
    The constant runner a detached task executes (written as runner.ps1 beside the staged
    body, started by Get-WuLoaderCommand's -EncodedCommand loader with -Folder). It checks
    step.ps1 against the hash detached-start recorded, runs it with params.json bound in a child
    powershell.exe, and records the exit code and the body's result. No value from the
    controller is part of its text.
    #>
    [CmdletBinding()]
    param()
    @'
[CmdletBinding()]
param([string]$Folder = $PSScriptRoot)
$ErrorActionPreference = 'Stop'
$folder = $Folder
$statusPath = Join-Path -Path $folder -ChildPath 'status.json'
$utf8 = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false

# Atomic writes and delete-sharing reads, as the prelude's Write-WuTextFile / Read-WuSharedText
# (Move-Item -Force deletes then moves; Get-Content does not share delete): a poll reading
# status.json at any instant neither fails this runner nor finds the file missing.
function Save-RunnerJson {
    param([string]$Path, [object]$InputObject)
    $temp = '{0}.tmp-{1}' -f $Path, $PID
    [System.IO.File]::WriteAllText($temp, ($InputObject | ConvertTo-Json -Depth 8), $utf8)
    for ($attempt = 1; $true; $attempt++) {
        try {
            if ([System.IO.File]::Exists($Path)) {
                [System.IO.File]::Replace($temp, $Path, [NullString]::Value)
            }
            else {
                [System.IO.File]::Move($temp, $Path)
            }
            return
        }
        catch {
            $inner = $_.Exception
            while ($null -ne $inner.InnerException) {
                $inner = $inner.InnerException
            }
            if (-not ($inner -is [System.IO.IOException] -or $inner -is [System.UnauthorizedAccessException]) -or $attempt -ge 100) {
                throw
            }
            Start-Sleep -Milliseconds 100
        }
    }
}

function Read-RunnerJson {
    param([string]$Path)
    $share = [System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete
    for ($attempt = 1; $true; $attempt++) {
        try {
            $stream = [System.IO.FileStream]::new($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share)
            break
        }
        catch {
            $inner = $_.Exception
            while ($null -ne $inner.InnerException) {
                $inner = $inner.InnerException
            }
            if (-not ($inner -is [System.IO.IOException]) -or $attempt -ge 50) {
                throw
            }
            Start-Sleep -Milliseconds 100
        }
    }
    $reader = New-Object -TypeName System.IO.StreamReader -ArgumentList @($stream, [System.Text.Encoding]::UTF8)
    try {
        $reader.ReadToEnd() | ConvertFrom-Json
    }
    finally {
        $reader.Dispose()
    }
}

$status = Read-RunnerJson -Path $statusPath
$status.state = 'running'
$status.pid = $PID
$status | Add-Member -NotePropertyName 'pid_started' -NotePropertyValue ((Get-Process -Id $PID).StartTime.ToUniversalTime().ToString('o')) -Force
$status.started = [DateTime]::UtcNow.ToString('o')
$status.boot_utc = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')
Save-RunnerJson -Path $statusPath -InputObject $status

$exitCode = 1
$result = $null
$failure = ''
try {
    # The body runs in a child powershell.exe started with -EncodedCommand (a Group Policy
    # execution policy does not block a command, only script files: about_Execution_Policies),
    # as the WinRS bootstrap runs a step: one script block, parameters bound, its `exit` the
    # child's exit code, its result one marked JSON line on stdout.
    $text = [System.IO.File]::ReadAllText((Join-Path -Path $folder -ChildPath 'step.ps1'))
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $hash = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($text)) | ForEach-Object -Process { $_.ToString('x2') })
    $recorded = Read-RunnerJson -Path $statusPath
    if ($hash -ne [string]$recorded.step_sha256) {
        throw 'step.ps1 does not match the hash detached-start recorded; not run'
    }
    $marker = 'WURESULT-{0}' -f [guid]::NewGuid().ToString('N')
    $loader = @(
        '$ErrorActionPreference = ''Stop'''
        'try { [Console]::OutputEncoding = [System.Text.Encoding]::UTF8 } catch { $null = $_ }'
        '$folder = ''WU-FOLDER'''
        '$text = [System.IO.File]::ReadAllText((Join-Path -Path $folder -ChildPath ''step.ps1''))'
        '$sha = [System.Security.Cryptography.SHA256]::Create()'
        '$hash = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($text)) | ForEach-Object -Process { $_.ToString(''x2'') })'
        'if ($hash -ne ''WU-SHA256'') { exit 1 }'
        '$parameters = @{}'
        '$raw = [System.IO.File]::ReadAllText((Join-Path -Path $folder -ChildPath ''params.json'')) | ConvertFrom-Json'
        'foreach ($property in $raw.PSObject.Properties) {'
        '    $value = $property.Value'
        '    if ($value -is [System.Array]) { $value = [string[]]@($value | ForEach-Object -Process { [string]$_ }) }'
        '    $parameters[$property.Name] = $value'
        '}'
        '$parameters[''ResultMarker''] = ''WU-MARKER'''
        '& ([scriptblock]::Create($text)) @parameters'
        'exit $LASTEXITCODE'
    ) -join "`n"
    $loader = $loader.Replace('WU-FOLDER', $folder.Replace("'", "''")).Replace('WU-SHA256', $hash).Replace('WU-MARKER', $marker)
    $encoded = [Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($loader))
    $powershell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'
    try {
        # The child's marked line is UTF-8: decode it as such (a task may have no console to set).
        [Console]::OutputEncoding = [System.Text.Encoding]::UTF8
    }
    catch {
        Write-Verbose ('console encoding left as is: {0}' -f $_.Exception.Message)
    }
    # Windows PowerShell 5.1 turns a native program's stderr lines into error records: 'Stop'
    # would throw on the first one, so the preference is relaxed for this call only.
    $ErrorActionPreference = 'Continue'
    $global:LASTEXITCODE = 1
    $lines = @(& $powershell -NoProfile -NonInteractive -EncodedCommand $encoded 2>&1)
    $exitCode = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    foreach ($line in $lines) {
        $lineText = [string]$line
        if ($lineText.StartsWith($marker + ' ')) {
            $result = $lineText.Substring($marker.Length + 1) | ConvertFrom-Json
        }
    }
}
catch {
    $exitCode = 1
    $failure = $_.Exception.Message
}
finally {
    if ($null -ne $result) {
        Save-RunnerJson -Path (Join-Path -Path $folder -ChildPath 'result.json') -InputObject $result
    }
    $status = Read-RunnerJson -Path $statusPath
    $status.state = 'finished'
    $status.exit_code = $exitCode
    $status.finished = [DateTime]::UtcNow.ToString('o')
    $status.error = $failure
    if ($exitCode -eq 0 -or $exitCode -eq 3010) {
        $status.percent = 100
    }
    Save-RunnerJson -Path $statusPath -InputObject $status
}
exit $exitCode
'@
}

function Get-WuFailSafePath {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][ValidateSet('av', 'clean-boot')][string]$Kind)
    $folder = Join-Path -Path (Get-WuStateRoot) -ChildPath 'failsafe'
    $null = New-Item -ItemType Directory -Path $folder -Force
    Join-Path -Path $folder -ChildPath ('{0}.json' -f $Kind)
}

function Get-WuLoaderCommand {
    <#
    The -EncodedCommand text that runs a staged script of ours as a script block once its sha256
    matches. A Group Policy execution policy (MachinePolicy/UserPolicy) outranks the command
    line's -ExecutionPolicy (Process scope) and blocks an unsigned -File; a command is not a
    script file, so policy does not apply to it (Microsoft, about_Execution_Policies: "Execution
    policy precedence", and "The execution policy ... doesn't restrict ... commands"). The text
    run is our own file, written by this prelude and checked by hash: no controller value.
    -EncodedCommand takes base64 of UTF-16LE (Microsoft, about_PowerShell_exe).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-f]{64}$')][string]$Hash,
        [string]$Folder = ''
    )
    $loader = @'
$ErrorActionPreference = 'Stop'
$text = [System.IO.File]::ReadAllText('WU-PATH')
$sha = [System.Security.Cryptography.SHA256]::Create()
$hash = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($text)) | ForEach-Object -Process { $_.ToString('x2') })
if ($hash -ne 'WU-SHA256') {
    exit 1
}
& ([scriptblock]::Create($text))
'@
    if ($Folder) {
        $call = '& ([scriptblock]::Create($text)) -Folder ''{0}''' -f $Folder.Replace("'", "''")
        $loader = $loader.Replace('& ([scriptblock]::Create($text))', $call)
    }
    $loader = $loader.Replace('WU-PATH', $Path.Replace("'", "''")).Replace('WU-SHA256', $Hash)
    [Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($loader))
}

function Get-WuTextHash {
    <# Lower-case hex sha256 of a text's UTF-8 bytes (what Get-WuLoaderCommand's loader compares). #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][AllowEmptyString()][string]$Text)
    $sha = [System.Security.Cryptography.SHA256]::Create()
    -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text)) | ForEach-Object -Process { $_.ToString('x2') })
}

function Register-WuFailSafe {
    <#
    Registers a SYSTEM task that runs the restore function at the deadline (and at start-up,
    doing nothing before the deadline), then proves it can run here: the task is started at
    once, and its script (before the deadline it only writes failsafe\<kind>.probe.json) must
    answer within -ProbeSeconds, in FullLanguage. A task that cannot run (a Group Policy
    execution policy, Constrained Language under WDAC/AppLocker, a broken task scheduler) is
    removed and this throws, so the caller changes nothing: a fail-safe that would never fire is
    no fail-safe. The task's script is built from the text of this prelude's own functions and a
    constant call: no controller value enters it. The caller records the state (with its
    deadline) first: the probe run reads it.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][ValidateSet('av', 'clean-boot')][string]$Kind,
        [Parameter(Mandatory = $true)][datetime]$DeadlineUtc,
        [Parameter(Mandatory = $true)][ValidateSet('Restore-WuAvState', 'Restore-WuStartTypes')][string]$RestoreFunction,
        [ValidateRange(5, 600)][int]$ProbeSeconds = 60
    )
    $helpers = @('Get-WuStateRoot', 'Get-WuRegistryValue', 'Get-WuSystemTool', 'Invoke-WuNative',
        'Set-WuServiceStartType', 'Get-WuFailSafePath', 'Get-WuInnermostException', 'Read-WuSharedText',
        'Read-WuJsonFile', 'Write-WuTextFile', 'Write-WuJsonFile', $RestoreFunction)
    $builder = New-Object -TypeName System.Text.StringBuilder
    $null = $builder.AppendLine('$ErrorActionPreference = ''Stop''')
    foreach ($name in $helpers) {
        $definition = (Get-Command -Name $name -CommandType Function).Definition
        $null = $builder.AppendLine(('function {0} {{{1}}}' -f $name, $definition))
    }
    $null = $builder.AppendLine(('$statePath = Get-WuFailSafePath -Kind ''{0}''' -f $Kind))
    $null = $builder.AppendLine('$probe = @{ utc = [DateTime]::UtcNow.ToString(''o''); language_mode = [string]$ExecutionContext.SessionState.LanguageMode }')
    $null = $builder.AppendLine('Write-WuJsonFile -Path ($statePath -replace ''\.json$'', ''.probe.json'') -InputObject $probe')
    $null = $builder.AppendLine('$state = Read-WuJsonFile -Path $statePath')
    $null = $builder.AppendLine('if ($null -eq $state) { exit 0 }')
    $null = $builder.AppendLine('if ([DateTime]::UtcNow -lt ([DateTime]::Parse($state.deadline_utc)).ToUniversalTime()) { exit 0 }')
    $null = $builder.AppendLine(('{0} -Reason ''fail-safe deadline passed''' -f $RestoreFunction))
    $text = $builder.ToString()

    $null = Protect-WuStateRoot
    $folder = Join-Path -Path (Get-WuStateRoot) -ChildPath 'failsafe'
    $scriptPath = Join-Path -Path $folder -ChildPath ('restore-{0}.ps1' -f $Kind)
    $probePath = Join-Path -Path $folder -ChildPath ('{0}.probe.json' -f $Kind)
    Write-WuTextFile -Path $scriptPath -Text $text -Bom

    $powershell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'
    $encoded = Get-WuLoaderCommand -Path $scriptPath -Hash (Get-WuTextHash -Text $text)
    $action = New-ScheduledTaskAction -Execute $powershell -Argument ('-NoProfile -NonInteractive -EncodedCommand {0}' -f $encoded)
    $triggers = @(
        (New-ScheduledTaskTrigger -Once -At $DeadlineUtc.ToLocalTime()),
        (New-ScheduledTaskTrigger -AtStartup)
    )
    $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
    $settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -ExecutionTimeLimit (New-TimeSpan -Hours 1)
    $taskName = 'wuremote-failsafe-{0}' -f $Kind
    $null = Register-ScheduledTask -TaskName $taskName -TaskPath $script:WuTaskPath -Action $action -Trigger $triggers `
        -Principal $principal -Settings $settings -Force

    # The probe: the task's own run, now, must answer.
    if (Test-Path -LiteralPath $probePath) {
        Remove-Item -LiteralPath $probePath -Force
    }
    Start-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName
    $until = [DateTime]::UtcNow.AddSeconds($ProbeSeconds)
    while (-not (Test-Path -LiteralPath $probePath) -and [DateTime]::UtcNow -lt $until) {
        Start-Sleep -Milliseconds 500
    }
    $answer = Read-WuJsonFile -Path $probePath
    if ($null -eq $answer -or [string]$answer.language_mode -ne 'FullLanguage') {
        $lastResult = ''
        # The task's record is only read to explain the refusal; its absence changes nothing.
        $info = Get-ScheduledTaskInfo -TaskPath $script:WuTaskPath -TaskName $taskName -ErrorAction SilentlyContinue
        if ($null -ne $info) {
            $lastResult = (' (task last result 0x{0:X8})' -f ([long]$info.LastTaskResult -band [long]4294967295))
        }
        $mode = 'no answer'
        if ($null -ne $answer) {
            $mode = 'it runs in {0}' -f $answer.language_mode
        }
        $null = Unregister-WuFailSafe -Kind $Kind
        throw ('the fail-safe task cannot run on this host: {0}{1}; check the execution policy (Get-ExecutionPolicy -List) and the language mode (WDAC/AppLocker); nothing was changed' -f $mode, $lastResult)
    }
    $taskName
}

function Complete-WuFailSafeExtended {
    <#
    A pausing step (av-pause, clean-boot) that finds its own earlier change still recorded:
    extends the deadline (written first: the fail-safe's probe run reads it), re-arms the
    fail-safe and ends the step, recording nothing new. When no fail-safe can run here any more,
    the change is undone now (RestoreFunction) rather than left without one. Never returns.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Step,
        [Parameter(Mandatory = $true)][ValidateSet('av', 'clean-boot')][string]$Kind,
        [Parameter(Mandatory = $true)][object]$Existing,
        [Parameter(Mandatory = $true)][DateTime]$DeadlineUtc,
        [Parameter(Mandatory = $true)][ValidateSet('Restore-WuAvState', 'Restore-WuStartTypes')][string]$RestoreFunction,
        [Parameter(Mandatory = $true)][hashtable]$Facts,
        [Parameter(Mandatory = $true)][string]$UndoneText,
        [Parameter(Mandatory = $true)][string]$ExtendedText,
        [string]$ResultMarker = ''
    )
    $Facts['state'] = $Existing
    $Existing.deadline_utc = $DeadlineUtc.ToString('o')
    Write-WuJsonFile -Path (Get-WuFailSafePath -Kind $Kind) -InputObject $Existing
    try {
        $null = Register-WuFailSafe -Kind $Kind -DeadlineUtc $DeadlineUtc -RestoreFunction $RestoreFunction
    }
    catch {
        $Facts['restored'] = & $RestoreFunction -Reason 'fail-safe cannot run'
        Complete-WuStep -Step $Step -Status 'failed' -ExitCode 1 -Facts $Facts -ResultMarker $ResultMarker `
            -Messages @(('{0}; {1}' -f $_.Exception.Message, $UndoneText))
    }
    Complete-WuStep -Step $Step -Status 'ok' -ExitCode 0 -Facts $Facts -Messages @($ExtendedText) -ResultMarker $ResultMarker
}

function Unregister-WuFailSafe {
    <# Removes the fail-safe task and its script; the caller removes the state file once restored. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][ValidateSet('av', 'clean-boot')][string]$Kind)
    $taskName = 'wuremote-failsafe-{0}' -f $Kind
    $task = Get-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName -ErrorAction SilentlyContinue # absent is fine: nothing to cancel
    if ($null -ne $task) {
        Unregister-ScheduledTask -TaskPath $script:WuTaskPath -TaskName $taskName -Confirm:$false
    }
    $scriptPath = Join-Path -Path (Join-Path -Path (Get-WuStateRoot) -ChildPath 'failsafe') -ChildPath ('restore-{0}.ps1' -f $Kind)
    if (Test-Path -LiteralPath $scriptPath) {
        Remove-Item -LiteralPath $scriptPath -Force
    }
    $null -ne $task
}

function Restore-WuStartTypes {
    <# Puts back exactly the start types clean-boot recorded; returns one change per service. #>
    [CmdletBinding()]
    param([string]$Reason = 'clean-boot-restore')
    $statePath = Get-WuFailSafePath -Kind 'clean-boot'
    $state = Read-WuJsonFile -Path $statePath
    $changes = New-Object -TypeName System.Collections.Generic.List[object]
    if ($null -eq $state) {
        return , $changes.ToArray()
    }
    $failed = 0
    foreach ($entry in @($state.services)) {
        try {
            Set-WuServiceStartType -Name $entry.name -StartType $entry.original_start_type -Confirm:$false
            $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = $entry.name; from = 'Disabled'; to = $entry.original_start_type; reason = $Reason })
            if ($entry.original_state -eq 'Running' -and $entry.original_start_type -like 'Automatic*') {
                try {
                    Start-Service -Name $entry.name
                    $changes.Add([pscustomobject]@{ kind = 'service-state'; name = $entry.name; from = 'Stopped'; to = 'Running'; reason = $Reason })
                }
                catch {
                    # The start type is back, which is what is owed; the next boot starts it.
                    $changes.Add([pscustomobject]@{ kind = 'service-state'; name = $entry.name; from = 'Stopped'; to = 'Stopped'; warning = $_.Exception.Message })
                }
            }
        }
        catch {
            $failed++
            $changes.Add([pscustomobject]@{ kind = 'service-start-type'; name = $entry.name; from = 'Disabled'; to = $entry.original_start_type; error = $_.Exception.Message })
        }
    }
    if ($failed -eq 0) {
        Remove-Item -LiteralPath $statePath -Force
    }
    , $changes.ToArray()
}

function Restore-WuAvState {
    <# Turns back on what av-pause turned off (Defender real-time protection, vendor resume command). #>
    [CmdletBinding()]
    param([string]$Reason = 'av-resume')
    $statePath = Get-WuFailSafePath -Kind 'av'
    $state = Read-WuJsonFile -Path $statePath
    $changes = New-Object -TypeName System.Collections.Generic.List[object]
    if ($null -eq $state) {
        return , $changes.ToArray()
    }
    $failed = 0
    if ($state.defender_paused) {
        try {
            Set-MpPreference -DisableRealtimeMonitoring $false
            $now = (Get-MpComputerStatus).RealTimeProtectionEnabled
            if (-not $now) {
                throw 'real-time protection still off after Set-MpPreference'
            }
            $changes.Add([pscustomobject]@{ kind = 'defender-realtime'; from = 'off'; to = 'on'; reason = $Reason })
        }
        catch {
            $failed++
            $changes.Add([pscustomobject]@{ kind = 'defender-realtime'; from = 'off'; to = 'on'; error = $_.Exception.Message })
        }
    }
    if ($state.vendor_resume_command) {
        $arguments = @()
        if ($null -ne $state.vendor_resume_arguments) {
            $arguments = [string[]]@($state.vendor_resume_arguments)
        }
        try {
            $run = Invoke-WuNative -FilePath $state.vendor_resume_command -ArgumentList $arguments
            if ($run.ExitCode -ne 0) {
                $failed++
            }
            $changes.Add([pscustomobject]@{ kind = 'vendor-resume'; command = $state.vendor_resume_command; exit_code = $run.ExitCode; reason = $Reason })
        }
        catch {
            $failed++
            $changes.Add([pscustomobject]@{ kind = 'vendor-resume'; command = $state.vendor_resume_command; error = $_.Exception.Message })
        }
    }
    if ($failed -eq 0) {
        Remove-Item -LiteralPath $statePath -Force
    }
    , $changes.ToArray()
}
