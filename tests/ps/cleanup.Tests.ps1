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

Describe 'Remove-WuTree' {
    # Real NTFS in TestDrive (issue 13, item 5): Remove-Item -Recurse in Windows PowerShell follows
    # a junction (PowerShell/PowerShell#621); the script's own remover must not.
    BeforeAll {
        $file = Join-Path -Path $script:RepoRoot -ChildPath 'ps_scripts\cleanup.ps1'
        $ast = [System.Management.Automation.Language.Parser]::ParseFile($file, [ref]$null, [ref]$null)
        $definition = $ast.Find({ param($node) $node -is [System.Management.Automation.Language.FunctionDefinitionAst] -and $node.Name -eq 'Remove-WuTree' }, $true)
        $null = Set-Item -Path 'function:script:Remove-WuTree' -Value $definition.Body.GetScriptBlock()
    }

    It 'removes an old folder and the junction inside it, never what the junction points at' {
        $target = Join-Path -Path $TestDrive -ChildPath 'precious'
        $null = New-Item -ItemType Directory -Path $target -Force
        Set-Content -LiteralPath (Join-Path -Path $target -ChildPath 'keep.txt') -Value 'keep'
        $old = Join-Path -Path $TestDrive -ChildPath 'old-run'
        $null = New-Item -ItemType Directory -Path (Join-Path -Path $old -ChildPath 'dism') -Force
        Set-Content -LiteralPath (Join-Path -Path $old -ChildPath 'dism\status.json') -Value '{}'
        $null = New-Item -ItemType Junction -Path (Join-Path -Path $old -ChildPath 'link') -Target $target
        Remove-WuTree -Item (Get-Item -LiteralPath $old -Force)
        Test-Path -LiteralPath $old | Should -BeFalse
        Test-Path -LiteralPath (Join-Path -Path $target -ChildPath 'keep.txt') | Should -BeTrue
    }
}
