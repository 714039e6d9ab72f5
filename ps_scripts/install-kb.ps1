# wuremote-script
# name: install-kb
# version: 3
# reboot: usually
# timeout: 5400
# idempotent: yes
# detached: yes
# opt-in: no
# end-wuremote-script
<#
.SYNOPSIS
    Installs one KB by hand from its .msu with DISM /Add-Package (wusa refuses remote sessions).
    Runs detached.
.DESCRIPTION
    Where the package comes from, first match wins:
      -Url      downloaded by the host (http/https) into this step's folder
      -MsuPath  a .msu file, or a folder of .msu files (checkpoint cumulative updates: DISM
                installs the checkpoints it needs from the same folder), local or UNC
      default   the folder the controller pushes to: %ProgramData%\wuremote\runs\<RunId>\install-kb\packages
    A package must name the KB in its file name and either match -Sha256 or carry a valid
    Authenticode signature. A KB already installed is success with nothing changed.
    Never beside another install: an install-kb or install-updates task of another run, a Windows
    Installer installation (the _MSIExecute mutex, learn.microsoft.com/windows/win32/msi/
    -msiexecute-mutex: held while an installation runs; other installs get 1618) or a servicing
    session holding Component Based Servicing's exclusive flag (HKLM\SOFTWARE\Microsoft\Windows\
    CurrentVersion\Component Based Servicing\SessionsPending, Exclusive = 1 while TrustedInstaller
    applies an update, cleared after; Microsoft Japan Windows support blog, jpwinsup.github.io/blog/
    2024/07/23/WindowsUpdate/QU/Exclusiveflag) is waited for, bounded by -WaitSeconds, and never
    stopped. Servicing pending a reboot (WinSxS\pending.xml) is refused at once: only a restart clears it.
.PARAMETER KbId
    KB followed by 6 to 8 digits, e.g. KB5034441.
.PARAMETER WaitSeconds
    How long another install or servicing operation on this host is waited for before this one
    is refused (exit 4).
.NOTES
    Exit codes: 0 installed or already installed, 3010 installed and a reboot is needed,
    1 failed, 2 not applicable to this host (0x800F081E), 4 refused: another install or servicing
    still running after -WaitSeconds, or servicing pending a reboot,
    5 not elevated, 6 something must come first: the component store needs repair
    (0x80073712: run dism) or a newer servicing stack (0x800F0823: install the SSU).
    Before Server 2019 (build 17763) a single .msu is expanded first and its .cab given to
    DISM, as Ansible's win_hotfix does for every .msu (expand.exe -F:*, the .cab named by the
    .xml's unattend/servicing/package/source location).
#>
[CmdletBinding()]
param(
    [string]$RunId = '',
    [string]$ResultMarker = '',
    [Parameter(Mandatory = $true)][ValidatePattern('^KB\d{6,8}$')][string]$KbId,
    [string]$MsuPath = '',
    [ValidatePattern('^$|^https?://[^\s"]+$')][string]$Url = '',
    [ValidatePattern('^$|^[0-9a-fA-F]{64}$')][string]$Sha256 = '',
    [ValidateRange(0, 7200)][int]$WaitSeconds = 1800
)
# wuremote-prelude
$null = Start-WuTranscript -Step 'install-kb' -RunId $RunId
Assert-WuElevated -Step 'install-kb' -ResultMarker $ResultMarker

$facts = @{ kb = $KbId }
$number = $KbId.Substring(2)

function Complete-Failed {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Message,
        [int]$Code = 1
    )
    Complete-WuStep -Step 'install-kb' -Status 'failed' -ExitCode $Code -Facts $facts -Messages @($Message) -ResultMarker $ResultMarker
}

# --- already installed is success ---
# Get-HotFix raises when the KB is not installed: that is the expected answer here.
$hotfix = Get-HotFix -Id $KbId -ErrorAction SilentlyContinue
if ($null -ne $hotfix) {
    $facts['already_installed'] = $true
    Complete-WuStep -Step 'install-kb' -Status 'ok' -ExitCode 0 -Facts $facts -Messages @(('{0} is already installed' -f $KbId)) -ResultMarker $ResultMarker
}
$facts['already_installed'] = $false

function Get-BusyServicing {
    <# What installs on this host now, besides this step: other runs' install tasks, Windows Installer, CBS. #>
    [CmdletBinding()]
    param()
    Get-WuOtherInstall -RunId $RunId
    $mutex = $null
    if ([System.Threading.Mutex]::TryOpenExisting('Global\_MSIExecute', [ref]$mutex)) {
        $mutex.Dispose()
        'a Windows Installer installation (_MSIExecute)'
    }
    $cbsKey = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\SessionsPending'
    # No SessionsPending key or no Exclusive value: no servicing session holds the flag.
    $sessions = Get-ItemProperty -LiteralPath $cbsKey -Name 'Exclusive' -ErrorAction SilentlyContinue
    if ($null -ne $sessions -and [int]$sessions.Exclusive -ne 0) {
        'a servicing operation (TrustedInstaller: SessionsPending\Exclusive)'
    }
}

# --- never beside another install; never on top of servicing that waits for a restart ---
$waited = 0
$busy = @(Get-BusyServicing)
while ($busy.Count -gt 0 -and $waited -lt $WaitSeconds) {
    Write-Verbose ('waiting for {0} to finish ({1} s of {2} s)' -f ($busy -join ', '), $waited, $WaitSeconds)
    Start-Sleep -Seconds 15
    $waited += 15
    $busy = @(Get-BusyServicing)
}
$facts['waited_seconds'] = $waited
if ($busy.Count -gt 0) {
    $facts['busy'] = $busy
    Complete-Failed -Code 4 -Message ('{0} still running after {1} s: left alone (never stopped); install {2} again when it ends' -f ($busy -join ', '), $WaitSeconds, $KbId)
}
if (Test-Path -LiteralPath (Join-Path -Path $env:SystemRoot -ChildPath 'WinSxS\pending.xml')) {
    Complete-Failed -Code 4 -Message 'servicing is pending a reboot (pending.xml): reboot, then install'
}

# --- find the package ---
$runPart = 'adhoc'
if ($RunId) {
    $runPart = $RunId
}
$stepFolder = Get-WuRunFolder -RunId $runPart -Step 'install-kb'
try {
    if ($Url) {
        $leaf = [System.IO.Path]::GetFileName(([uri]$Url).AbsolutePath)
        if ($leaf -notmatch '^[\w.\-]+\.msu$') {
            Complete-Failed -Message ('the URL must end in a .msu file name, got {0}' -f $leaf)
        }
        $downloads = Join-Path -Path $stepFolder -ChildPath 'download'
        $null = New-Item -ItemType Directory -Path $downloads -Force
        $target = Join-Path -Path $downloads -ChildPath $leaf
        [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
        $client = New-Object -TypeName System.Net.WebClient
        try {
            $client.DownloadFile($Url, $target)
        }
        finally {
            $client.Dispose()
        }
        $packagePath = $target
    }
    elseif ($MsuPath) {
        $packagePath = $MsuPath
    }
    else {
        $packagePath = Join-Path -Path $stepFolder -ChildPath 'packages'
    }
}
catch {
    Complete-Failed -Message ('could not fetch the package: {0}' -f $_.Exception.Message)
}
$facts['package_path'] = $packagePath
if (-not (Test-Path -LiteralPath $packagePath)) {
    Complete-Failed -Message ('no package at {0}' -f $packagePath)
}
$files = @(Get-ChildItem -LiteralPath $packagePath -Filter '*.msu' -File)
if ($files.Count -eq 0) {
    Complete-Failed -Message ('no .msu file at {0}' -f $packagePath)
}
$named = @($files | Where-Object -FilterScript { $_.Name -match ('(?i)kb{0}(\D|$)' -f $number) })
if ($named.Count -eq 0) {
    Complete-Failed -Message ('none of {0} names {1}: refusing to install an unnamed package' -f (($files | ForEach-Object -Process { $_.Name }) -join ', '), $KbId)
}

# --- integrity: the given SHA-256, else a valid signature on every file ---
$checked = New-Object -TypeName System.Collections.Generic.List[object]
foreach ($file in $files) {
    $hash = (Get-FileHash -LiteralPath $file.FullName -Algorithm SHA256).Hash.ToLowerInvariant()
    $signature = [string](Get-AuthenticodeSignature -LiteralPath $file.FullName).Status
    $checked.Add(@{ name = $file.Name; sha256 = $hash; signature = $signature })
    $isTarget = $named -contains $file
    if ($Sha256 -and $isTarget) {
        if ($hash -ne $Sha256.ToLowerInvariant()) {
            $facts['packages'] = $checked.ToArray()
            Complete-Failed -Message ('{0}: SHA-256 {1} does not match the expected {2}' -f $file.Name, $hash, $Sha256.ToLowerInvariant())
        }
    }
    elseif ($signature -ne 'Valid') {
        $facts['packages'] = $checked.ToArray()
        Complete-Failed -Message ('{0}: signature {1} and no SHA-256 given: not installed' -f $file.Name, $signature)
    }
}
$facts['packages'] = $checked.ToArray()

# --- install: DISM on the .msu itself (or the folder, for checkpoint updates) ---
$target = $named[0].FullName
if ($files.Count -gt 1) {
    $target = $packagePath
}
elseif ([int](Get-CimInstance -ClassName Win32_OperatingSystem).BuildNumber -lt 17763) {
    # 2012 R2 and 2016: DISM gets the .cab inside the .msu (ansible.windows win_hotfix, Expand-MSU
    # and Get-HotfixMetadataFromFile; the .msu layout: Microsoft KB934307, "Description of the
    # Windows Update Standalone Installer").
    $expanded = Join-Path -Path $stepFolder -ChildPath 'expanded'
    if (Test-Path -LiteralPath $expanded) {
        Remove-Item -LiteralPath $expanded -Recurse -Force
    }
    $null = New-Item -ItemType Directory -Path $expanded -Force
    $expand = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'expand.exe') -ArgumentList @($target, $expanded, '-F:*')
    $manifest = @(Get-ChildItem -LiteralPath $expanded -Filter '*.xml' -File) | Select-Object -First 1
    if ($expand.ExitCode -ne 0 -or $null -eq $manifest) {
        Complete-Failed -Message ('could not expand {0} to find its .cab (expand.exe exit {1})' -f $named[0].Name, $expand.ExitCode)
    }
    [xml]$unattend = Get-Content -LiteralPath $manifest.FullName -Raw
    $cab = Join-Path -Path $expanded -ChildPath (Split-Path -Path $unattend.unattend.servicing.package.source.GetAttribute('location') -Leaf)
    if (-not (Test-Path -LiteralPath $cab -PathType Leaf)) {
        Complete-Failed -Message ('{0}: its .xml names a .cab the package does not hold' -f $named[0].Name)
    }
    $facts['expanded_cab'] = $cab
    $target = $cab
}
$onLine = {
    param([string]$Line)
    $found = [regex]::Matches($Line, '(\d{1,3}(?:\.\d)?)%')
    if ($found.Count -gt 0) {
        $percent = [int][math]::Floor([double]$found[$found.Count - 1].Groups[1].Value)
        Set-WuStepProgress -RunId $RunId -Step 'install-kb' -Percent ([math]::Min(99, $percent))
    }
}
$run = Invoke-WuNative -FilePath (Get-WuSystemTool -Name 'dism.exe') -ArgumentList @('/Online', '/Add-Package', ('/PackagePath:{0}' -f $target), '/NoRestart', '/English') -OnLine $onLine
$hex = ConvertTo-WuHexHResult -Code $run.ExitCode
$facts['exit_code'] = $run.ExitCode
$facts['hresult'] = $hex
$facts['output_tail'] = @($run.Output | Select-Object -Last 15)
$change = [pscustomobject]@{ kind = 'kb-installed'; kb = $KbId; package = $target }

$status = 'failed'
$exitCode = 1
$changes = @()
$messages = @(('DISM /Add-Package failed with {0}; see %SystemRoot%\Logs\CBS\CBS.log' -f $hex))
switch ($hex) {
    '0x00000000' {
        $status = 'ok'
        $exitCode = 0
        $changes = @($change)
        $messages = @(('{0} installed' -f $KbId))
    }
    '0x00000BC2' {
        $status = 'reboot-required'
        $exitCode = 3010
        $changes = @($change)
        $messages = @(('{0} installed; a reboot completes it' -f $KbId))
    }
    '0x800F081E' {
        $status = 'not-applicable'
        $exitCode = 2
        $messages = @(('{0} does not apply to this host (0x800F081E): wrong OS, architecture or superseded' -f $KbId))
    }
    '0x80073712' {
        $exitCode = 6
        $messages = @('the component store is damaged (0x80073712): run dism, then install again')
    }
    '0x800F0823' {
        $exitCode = 6
        $messages = @(('{0} needs a newer servicing stack (0x800F0823): install the latest servicing stack update (SSU) for this build, then {0} again' -f $KbId))
    }
}
Complete-WuStep -Step 'install-kb' -Status $status -ExitCode $exitCode -Facts $facts -Changes $changes -Messages $messages `
    -RebootRequired ($exitCode -eq 3010) -ResultMarker $ResultMarker
