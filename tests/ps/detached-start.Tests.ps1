# Pester 5: detached-start stages a checked payload and starts (or re-attaches to) a SYSTEM task.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'detached-start'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'detached-start' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'healthy')
        Mock Register-ScheduledTask { $null }
        Mock Start-ScheduledTask { $null }
        Mock Get-ScheduledTask { $null }
        Mock Start-Sleep { $null }
        $script:Body = (Get-Content -LiteralPath (Join-Path -Path $script:RepoRoot -ChildPath 'ps_scripts\dism.ps1') -Raw).Replace("`r`n", "`n")
        $sha = [System.Security.Cryptography.SHA256]::Create()
        $script:BodySha = -join ($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($script:Body)) | ForEach-Object -Process { $_.ToString('x2') })
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester'
        if (Test-Path -LiteralPath $folder) {
            Remove-Item -LiteralPath $folder -Recurse -Force
        }
    }

    It 'starts the runner through the -EncodedCommand loader, which an AllSigned Group Policy does not block' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Payload = $script:Body; PayloadSha256 = $script:BodySha; ParametersJson = '{}' }
        $run.ExitCode | Should -Be 0
        Should -Invoke Register-ScheduledTask -ParameterFilter {
            $Action.Arguments -like '*-EncodedCommand *' -and $Action.Arguments -notlike '*-File*' -and $Action.Arguments -notlike '*-ExecutionPolicy*'
        } -Times 1 -Exactly
        $status = Get-Content -LiteralPath (Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\dism\status.json') -Raw | ConvertFrom-Json
        $status.step_sha256 | Should -Be $script:BodySha
    }

    It 'stages step, runner, parameters and status, then starts the SYSTEM task' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Payload = $script:Body; PayloadSha256 = $script:BodySha; ParametersJson = '{"Source": "wim:D:\\sources\\install.wim:1"}' }
        $run.ExitCode | Should -Be 0
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\dism'
        foreach ($name in @('step.ps1', 'runner.ps1', 'params.json', 'status.json')) {
            Test-Path -LiteralPath (Join-Path -Path $folder -ChildPath $name) | Should -BeTrue
        }
        $parameters = Get-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'params.json') -Raw | ConvertFrom-Json
        $parameters.RunId | Should -Be 'pester'
        $parameters.Source | Should -Be 'wim:D:\sources\install.wim:1'
        Should -Invoke Register-ScheduledTask -ParameterFilter { $TaskName -eq 'wuremote-pester-dism' -and $Principal.UserId -eq 'SYSTEM' } -Times 1 -Exactly
        Should -Invoke Start-ScheduledTask -Times 1 -Exactly
    }

    It 'refuses a payload that does not match its hash' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Payload = $script:Body + ' '; PayloadSha256 = $script:BodySha }
        $run.ExitCode | Should -Be 1
        Should -Invoke Register-ScheduledTask -Times 0 -Exactly
    }

    It 'refuses a payload that is not the named detached step' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'sfc'; Payload = $script:Body; PayloadSha256 = $script:BodySha }
        $run.ExitCode | Should -Be 1
        Should -Invoke Register-ScheduledTask -Times 0 -Exactly
    }

    It 're-attaches to a running step instead of starting another' {
        $folder = Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\dism'
        $null = New-Item -ItemType Directory -Path $folder -Force
        $status = @{ state = 'running'; pid = $PID; started = [DateTime]::UtcNow.ToString('o'); percent = 40; exit_code = $null; finished = $null; boot_utc = '2025-11-18T06:12:00.0000000Z'; error = '' }
        Set-Content -LiteralPath (Join-Path -Path $folder -ChildPath 'status.json') -Value ($status | ConvertTo-Json) -Encoding UTF8
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Payload = $script:Body; PayloadSha256 = $script:BodySha }
        $run.ExitCode | Should -Be 0
        $run.Result.facts.attached | Should -BeTrue
        Should -Invoke Register-ScheduledTask -Times 0 -Exactly
    }

    It 'composes the payload from -Body and the prelude text the session holds, then checks it against -PayloadSha256' {
        $prelude = "function Get-WuPesterPrelude {`n    'from the session'`n}"
        $hash = [System.Security.Cryptography.SHA256]::Create()
        $preludeSha = -join ($hash.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($prelude)) | ForEach-Object -Process { $_.ToString('x2') })
        $nl = "`n"
        $block = $nl + '# >>> wuremote-prelude' + $nl + $prelude + $nl + '# <<< wuremote-prelude' + $nl
        $composed = $script:Body.Replace($nl + '# wuremote-prelude' + $nl, $block)
        $composedSha = -join ($hash.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($composed)) | ForEach-Object -Process { $_.ToString('x2') })
        Set-Variable -Name ('WuremotePreludeText_' + $preludeSha) -Scope Global -Value $prelude
        try {
            $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Body = $script:Body; PreludeSha256 = $preludeSha; PayloadSha256 = $composedSha; ParametersJson = '{}' }
        }
        finally {
            Remove-Variable -Name ('WuremotePreludeText_' + $preludeSha) -Scope Global
        }
        $run.ExitCode | Should -Be 0
        $staged = [System.IO.File]::ReadAllText((Join-Path -Path $env:ProgramData -ChildPath 'wuremote\runs\pester\dism\step.ps1'), [System.Text.Encoding]::UTF8)
        $staged.TrimStart([char]0xFEFF) | Should -BeExactly $composed
        Should -Invoke Register-ScheduledTask -Times 1 -Exactly
    }

    It 'refuses -Body when the session holds no prelude of that hash, staging nothing' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ Step = 'dism'; Body = $script:Body; PreludeSha256 = ('0' * 64); PayloadSha256 = $script:BodySha }
        $run.ExitCode | Should -Be 1
        $run.Result.messages[0] | Should -BeLike 'no payload:*'
        Should -Invoke Register-ScheduledTask -Times 0 -Exactly
    }
}
