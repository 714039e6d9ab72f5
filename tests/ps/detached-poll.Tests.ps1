# Pester 5: detached-poll reads state, marks a reboot-interrupted step as interrupted, never as success.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'detached-poll'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'detached-poll' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Get-ScheduledTask { $null }
        $script:Folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\sfc'
        $null = New-Item -ItemType Directory -Path $script:Folder -Force
    }

    It 'says not applicable (exit 2) for a step never started' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'verify' }
        $run.ExitCode | Should -Be 2
    }

    It 'reports a step whose host rebooted mid-run as interrupted' {
        $status = @{ state = 'running'; pid = 999999; started = '2025-11-18T05:00:00.0000000Z'; percent = 30; exit_code = $null; finished = $null; boot_utc = '2025-11-17T06:00:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'sfc' }
        $run.ExitCode | Should -Be 0
        $run.Result.facts.state | Should -Be 'interrupted'
        $run.Result.facts.exit_code | Should -BeNullOrEmpty
    }

    It 'returns the step result and a transcript slice once finished' {
        $status = @{ state = 'finished'; pid = 1; started = '2025-11-18T07:00:00.0000000Z'; percent = 100; exit_code = 0; finished = '2025-11-18T07:10:00.0000000Z'; boot_utc = '2025-11-18T06:12:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'result.json') -Value '{"step": "sfc", "exit_code": 0}' -Encoding UTF8
        [System.IO.File]::WriteAllText((Join-Path -Path $script:Folder -ChildPath 'transcript.log'), "line one`nline two`n")
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'sfc'; TranscriptOffset = 0 }
        $run.Result.facts.state | Should -Be 'finished'
        $run.Result.facts.result.step | Should -Be 'sfc'
        $run.Result.facts.transcript | Should -Match 'line two'
        $run.Result.facts.transcript_next_offset | Should -Be 18
    }

    It 'reports a runner whose process id now belongs to another process as interrupted' {
        $status = @{ state = 'running'; pid = 4321; pid_started = '2025-11-18T07:00:00.0000000Z'; started = '2025-11-18T07:00:01.0000000Z'; percent = 30; exit_code = $null; finished = $null; boot_utc = '2025-11-18T06:12:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        Mock Get-Process -ParameterFilter { $Id -eq 4321 } { [pscustomobject]@{ Id = 4321; StartTime = ([datetime]'2025-11-18T09:30:00Z') } }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'sfc' }
        $run.Result.facts.state | Should -Be 'interrupted'
        Mock Get-Process -ParameterFilter { $Id -eq 4321 } { [pscustomobject]@{ Id = 4321; StartTime = ([datetime]'2025-11-18T07:00:00Z') } }
        Set-Content -LiteralPath (Join-Path -Path $script:Folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        (Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'sfc' }).Result.facts.state | Should -Be 'running'
    }
}
