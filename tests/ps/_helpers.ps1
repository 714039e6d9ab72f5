# Shared by the Pester files: builds a step's payload as the controller does (prelude inlined)
# and mocks the Windows cmdlets from a scenario fixture in wuremote/lab/fixtures/.
# Dot-source it in BeforeAll: . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
$script:RepoRoot = Split-Path -Parent (Split-Path -Parent $PSScriptRoot)
$script:FixtureFolder = Join-Path -Path $script:RepoRoot -ChildPath 'wuremote\lab\fixtures'

# Pester 5 looks a command up when Mock is called and throws "Could not find Command" when it
# does not exist yet (Pester src/functions/Mock.ps1, Resolve-Command). The payload defines its
# helpers (Test-WuElevated, Invoke-WuNative, Register-WuFailSafe, ...) only when it runs, so the
# prelude's top-level function definitions are loaded here first, with their real parameter
# blocks: a mock copies the parameters of the command it replaces, and -ParameterFilter and the
# mock bodies read them ($FilePath, $ArgumentList, $Name, $StartType). The payload's own
# definitions still lose to the mocks: Pester 5 mocks are aliases, and PowerShell resolves an
# alias before a function (about_Command_Precedence). tests/pslint.py (check_pester_mocks) checks
# statically that every mocked command is defined here, in its test file, or is a real cmdlet.
$script:PreludeFile = Join-Path -Path $script:RepoRoot -ChildPath 'ps_scripts\_prelude.ps1'
$preludeTokens = $null
$preludeErrors = $null
$preludeAst = [System.Management.Automation.Language.Parser]::ParseFile($script:PreludeFile, [ref]$preludeTokens, [ref]$preludeErrors)
if (@($preludeErrors).Count -gt 0) {
    throw ('the prelude does not parse: {0}' -f (@($preludeErrors) -join '; '))
}
$preludeFunctions = $preludeAst.FindAll({ param($node) $node -is [System.Management.Automation.Language.FunctionDefinitionAst] }, $false)
foreach ($definition in $preludeFunctions) {
    # The function's own body (param block and attributes included), defined in the test file's scope.
    $null = Set-Item -Path ('function:script:{0}' -f $definition.Name) -Value $definition.Body.GetScriptBlock()
}

# Cmdlets of modules a runner may not have (Defender on a host without it, the troubleshooting
# pack on Server SKUs): defined as stubs only where absent, with the parameters the scripts pass,
# so Mock finds them; a test that forgets to mock one fails loudly instead of touching the runner.
# Absent here is the case being handled, not an error to see.
if (-not (Get-Command -Name 'Get-MpComputerStatus' -ErrorAction SilentlyContinue)) {
    function Get-MpComputerStatus {
        [CmdletBinding()]
        param()
        throw 'stub: mock Get-MpComputerStatus'
    }
}
# Absent here is the case being handled, not an error to see.
if (-not (Get-Command -Name 'Set-MpPreference' -ErrorAction SilentlyContinue)) {
    function Set-MpPreference {
        [CmdletBinding()]
        param([bool]$DisableRealtimeMonitoring)
        throw 'stub: mock Set-MpPreference'
    }
}
# Absent here is the case being handled, not an error to see.
if (-not (Get-Command -Name 'Get-TroubleshootingPack' -ErrorAction SilentlyContinue)) {
    function Get-TroubleshootingPack {
        [CmdletBinding()]
        param([string]$Path)
        throw 'stub: mock Get-TroubleshootingPack'
    }
}
# Absent here is the case being handled, not an error to see.
if (-not (Get-Command -Name 'Invoke-TroubleshootingPack' -ErrorAction SilentlyContinue)) {
    function Invoke-TroubleshootingPack {
        [CmdletBinding()]
        param([object]$Pack, [switch]$Unattended, [string]$Result)
        throw 'stub: mock Invoke-TroubleshootingPack'
    }
}

function Get-WuFixture {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Scenario)
    $path = Join-Path -Path $script:FixtureFolder -ChildPath ('{0}.json' -f $Scenario)
    Get-Content -LiteralPath $path -Raw -Encoding UTF8 | ConvertFrom-Json
}

function New-WuTestPayload {
    <# The script with the prelude inlined, written to TestDrive; returns its path. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Name)
    $folder = Join-Path -Path $script:RepoRoot -ChildPath 'ps_scripts'
    $script = Get-Content -LiteralPath (Join-Path -Path $folder -ChildPath ('{0}.ps1' -f $Name)) -Raw -Encoding UTF8
    $prelude = Get-Content -LiteralPath (Join-Path -Path $folder -ChildPath '_prelude.ps1') -Raw -Encoding UTF8
    $block = ('# >>> wuremote-prelude', $prelude.TrimEnd(), '# <<< wuremote-prelude') -join "`n"
    $payload = $script.Replace('# wuremote-prelude', $block)
    $path = Join-Path -Path $TestDrive -ChildPath ('{0}.ps1' -f $Name)
    [System.IO.File]::WriteAllText($path, $payload, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $true))
    $path
}

function Invoke-WuTestStep {
    <# Runs a payload; returns the result object with the process exit code beside it. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory = $true)][string]$Path,
        [hashtable]$Parameters = @{}
    )
    $global:LASTEXITCODE = $null
    $output = & $Path -RunId 'pester' @Parameters
    $result = @($output | Where-Object -FilterScript { $null -ne $_ -and $_.PSObject.Properties.Name -contains 'wuremote_result' }) | Select-Object -Last 1
    [pscustomobject]@{ Result = $result; ExitCode = $LASTEXITCODE }
}

function ConvertTo-WuFixturePath {
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    $Path.Replace($env:SystemRoot, '%SystemRoot%')
}

function Set-WuFixtureMocks {
    <# Mocks every cmdlet diagnose and the repair steps read, answering from the fixture. #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][object]$Fixture)
    $script:WuFixture = $Fixture
    $env:ProgramData = Join-Path -Path $TestDrive -ChildPath 'ProgramData'

    Mock Start-Transcript { $null }
    Mock Stop-Transcript { $null }
    Mock Test-WuElevated { [bool]$script:WuFixture.cmdlets.elevated }
    # The runner's own update agent and ConfigMgr state must not leak into a test.
    Mock Get-WuUpdateAgentRebootRequired { $false }
    Mock Get-WuConfigMgrRebootPending { $false }
    Mock Protect-WuStateRoot { $null = New-Item -ItemType Directory -Path (Join-Path -Path $env:ProgramData -ChildPath 'wuremote') -Force; Join-Path -Path $env:ProgramData -ChildPath 'wuremote' }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_OperatingSystem' } {
        $os = $script:WuFixture.cmdlets.Win32_OperatingSystem
        [pscustomobject]@{ Caption = $os.Caption; Version = $os.Version; BuildNumber = $os.BuildNumber; ProductType = $os.ProductType; LastBootUpTime = [datetime]$os.LastBootUpTime }
    }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_ComputerSystem' } { $script:WuFixture.cmdlets.Win32_ComputerSystem }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Service' } { @($script:WuFixture.cmdlets.Win32_Service) }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_LogicalDisk' } { @($script:WuFixture.cmdlets.Win32_LogicalDisk) }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'RSOP_SystemService' } { @($script:WuFixture.cmdlets.RSOP_SystemService) }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'AntiVirusProduct' } { throw 'Invalid namespace' }
    Mock Test-Path -ParameterFilter { $LiteralPath -like 'HKLM:*' } {
        $script:WuFixture.cmdlets.registry.PSObject.Properties.Name -contains $LiteralPath
    }
    Mock Get-ItemProperty -ParameterFilter { $LiteralPath -like 'HKLM:*' } {
        $values = $script:WuFixture.cmdlets.registry.($LiteralPath)
        if ($null -eq $values) {
            throw ('Cannot find path {0}' -f $LiteralPath)
        }
        $values
    }
    Mock Test-Path -ParameterFilter { $LiteralPath -like ('{0}*' -f $env:SystemRoot) } {
        $key = ConvertTo-WuFixturePath -Path $LiteralPath
        $paths = $script:WuFixture.cmdlets.paths
        if ($paths.PSObject.Properties.Name -contains $key) {
            return [bool]$paths.$key
        }
        $false
    }
    Mock Get-ChildItem -ParameterFilter { $Recurse -and $LiteralPath -like ('{0}*' -f $env:SystemRoot) } {
        $bytes = $script:WuFixture.cmdlets.folder_bytes.(ConvertTo-WuFixturePath -Path $LiteralPath)
        if ($null -ne $bytes) {
            [pscustomobject]@{ Length = [long]$bytes }
        }
    }
    Mock Get-ChildItem -ParameterFilter { $Directory -and $LiteralPath -eq $env:SystemRoot } { $null }
    Mock Get-Process -ParameterFilter { $null -ne $Name } {
        foreach ($wanted in @($Name)) {
            if (@($script:WuFixture.cmdlets.processes) -contains $wanted) {
                [pscustomobject]@{ ProcessName = $wanted; Id = 4242 }
            }
        }
    }
    Mock Get-WinEvent {
        $key = $FilterHashtable.LogName
        if ($FilterHashtable.LogName -eq 'System') {
            $key = 'System/6008'
        }
        $rows = @($script:WuFixture.cmdlets.events.$key)
        if ($rows.Count -eq 0) {
            $exception = New-Object -TypeName System.Exception -ArgumentList 'No events were found that match the specified selection criteria.'
            $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @($exception, 'NoMatchingEventsFound,Microsoft.PowerShell.Commands.GetWinEventCommand', 'ObjectNotFound', $null)
            throw $record
        }
        foreach ($row in $rows) {
            [pscustomobject]@{ Id = $row.Id; TimeCreated = [datetime]$row.TimeCreated; Message = $row.Message }
        }
    }
    Mock Get-MpComputerStatus { $script:WuFixture.cmdlets.'Get-MpComputerStatus' }
    Mock Get-HotFix { @($script:WuFixture.cmdlets.Win32_QuickFixEngineering) | Where-Object -FilterScript { -not $Id -or @($Id) -contains $_.HotFixID } }
    Mock Get-WuLanguageMode { [string]$script:WuFixture.cmdlets.powershell.LanguageMode }
    Mock Get-ExecutionPolicy -ParameterFilter { $List } { @($script:WuFixture.cmdlets.powershell.ExecutionPolicyList) }
    Mock Get-Module -ParameterFilter { $Name -eq 'TroubleshootingPack' } {
        if ($script:WuFixture.cmdlets.TroubleshootingPack_module) {
            [pscustomobject]@{ Name = 'TroubleshootingPack' }
        }
    }
    Mock Invoke-WuNative {
        $leaf = Split-Path -Leaf $FilePath
        $native = $script:WuFixture.cmdlets.native
        $key = $null
        switch ($leaf) {
            'w32tm.exe' {
                if ($ArgumentList -contains '/query') {
                    return [pscustomobject]@{ ExitCode = $script:WuFixture.cmdlets.w32tm_status.exit_code; Output = @($script:WuFixture.cmdlets.w32tm_status.output) }
                }
                $key = 'w32tm.exe /resync'
            }
            'dism.exe' {
                if ($ArgumentList -contains '/RestoreHealth') {
                    $key = 'dism.exe /Online /Cleanup-Image /RestoreHealth'
                }
                elseif ($ArgumentList -contains '/Add-Package') {
                    $key = 'dism.exe /Online /Add-Package'
                }
            }
            'sfc.exe' { $key = 'sfc.exe /scannow' }
        }
        if ($null -eq $key) {
            return [pscustomobject]@{ ExitCode = 0; Output = @() }
        }
        $answer = $native.$key
        $lines = @()
        if ($answer.PSObject.Properties.Name -contains 'output') {
            $lines = @($answer.output)
        }
        [pscustomobject]@{ ExitCode = [int]$answer.exit_code; Output = $lines }
    }
}
