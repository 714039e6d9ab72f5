# Pester 5: cleanup frees space and never uses /ResetBase unless asked.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'cleanup'
    $script:SavedProgramData = $env:ProgramData
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'cleanup' {
    BeforeEach {
        Mock Remove-Item { $null }
        Mock Get-ChildItem -ParameterFilter { -not $Recurse } { $null }
    }

    It 'runs StartComponentCleanup without /ResetBase by default' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'low-disk')
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/StartComponentCleanup' -and $ArgumentList -notcontains '/ResetBase' } -Times 1 -Exactly
        $run.Result.facts.bytes_freed | Should -BeGreaterOrEqual 0
    }

    It 'skips the component store while a repair waits for a reboot' {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'servicing-in-progress')
        $run = Invoke-WuTestStep -Path $script:Payload
        Should -Invoke Invoke-WuNative -ParameterFilter { $ArgumentList -contains '/StartComponentCleanup' } -Times 0 -Exactly
        $run.Result.facts.component_store | Should -Match 'skipped'
    }
}
