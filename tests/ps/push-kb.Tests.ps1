# Pester 5: push-kb appends base64 chunks to a partial file, checks SHA-256 once whole and stages it for install-kb.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'push-kb'
    $script:SavedProgramData = $env:ProgramData
    $script:Bytes = [byte[]](1..250 | ForEach-Object -Process { [byte]($_ % 256) })
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $script:Sha256 = (($sha.ComputeHash($script:Bytes) | ForEach-Object -Process { $_.ToString('x2') }) -join '')
    $script:Name = 'windows10.0-kb5068787-x64.msu'

    function Invoke-Push {
        [CmdletBinding()]
        param(
            [long]$Offset = -1,
            [string[]]$Chunks = @(),
            [string]$Hash = $script:Sha256
        )
        $global:LASTEXITCODE = $null
        # Splatted: the parser this repository lints with reads a parameter name ending in digits badly.
        $parameters = @{ RunId = 'pester'; FileName = $script:Name; Sha256 = $Hash; Size = $script:Bytes.Length; Offset = $Offset }
        $output = $Chunks | & $script:Payload @parameters
        $result = @($output | Where-Object -FilterScript { $null -ne $_ -and $_.PSObject.Properties.Name -contains 'wuremote_result' }) | Select-Object -Last 1
        [pscustomobject]@{ Result = $result; ExitCode = $LASTEXITCODE }
    }

    function ConvertTo-Chunk {
        [CmdletBinding()]
        param([int]$From, [int]$To)
        [System.Convert]::ToBase64String($script:Bytes[$From..($To - 1)])
    }
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'push-kb' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'manual-kb')
        # TestDrive lasts the whole Describe: each test starts with nothing pushed.
        $state = Join-Path -Path $env:ProgramData -ChildPath 'wuremote'
        if (Test-Path -LiteralPath $state) {
            Remove-Item -LiteralPath $state -Recurse -Force
        }
    }

    It 'says what the host holds without writing' {
        $run = Invoke-Push
        $run.ExitCode | Should -Be 0
        $run.Result.facts.have | Should -Be 0
        $run.Result.facts.staged | Should -BeFalse
    }

    It 'appends chunks from the offset, then stages the whole file once its hash matches' {
        $first = Invoke-Push -Offset 0 -Chunks @((ConvertTo-Chunk -From 0 -To 100), (ConvertTo-Chunk -From 100 -To 200))
        $first.ExitCode | Should -Be 0
        $first.Result.facts.have | Should -Be 200
        $rest = Invoke-Push -Offset 200 -Chunks @(ConvertTo-Chunk -From 200 -To 250)
        $rest.ExitCode | Should -Be 0
        $rest.Result.facts.staged | Should -BeTrue
        $staged = Join-Path -Path $env:ProgramData -ChildPath ('wuremote\runs\pester\install-kb\packages\{0}' -f $script:Name)
        [System.IO.File]::ReadAllBytes($staged).Length | Should -Be 250
        $again = Invoke-Push
        $again.Result.facts.staged | Should -BeTrue
        $again.Result.facts.written | Should -Be 0
    }

    It 'refuses an offset beyond what the host holds' {
        $run = Invoke-Push -Offset 100 -Chunks @(ConvertTo-Chunk -From 100 -To 200)
        $run.ExitCode | Should -Be 1
        $run.Result.facts.have | Should -Be 0
    }

    It 'deletes a whole file whose hash does not match' {
        $run = Invoke-Push -Offset 0 -Chunks @(ConvertTo-Chunk -From 0 -To 250) -Hash ('0' * 64)
        $run.ExitCode | Should -Be 1
        $partial = Join-Path -Path $env:ProgramData -ChildPath ('wuremote\runs\pester\install-kb\push\{0}.partial' -f $script:Name)
        Test-Path -LiteralPath $partial | Should -BeFalse
    }
}
