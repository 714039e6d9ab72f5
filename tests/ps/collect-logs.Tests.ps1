# Pester 5: collect-logs returns bounded whole-line tails of CBS.log, dism.log and the update client's events.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
    $script:Payload = New-WuTestPayload -Name 'collect-logs'
    $script:SavedProgramData = $env:ProgramData
    $script:UpdateClientLog = 'Microsoft-Windows-WindowsUpdateClient/Operational'

    function Write-TestLog {
        [CmdletBinding()]
        param(
            [Parameter(Mandatory = $true)][string]$Path,
            [Parameter(Mandatory = $true)][string[]]$Lines
        )
        $text = ($Lines -join "`r`n") + "`r`n"
        [System.IO.File]::WriteAllText($Path, $text, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
    }

    function New-TestEventError {
        [CmdletBinding()]
        param(
            [Parameter(Mandatory = $true)][string]$Message,
            [Parameter(Mandatory = $true)][string]$ErrorId
        )
        $exception = New-Object -TypeName System.Exception -ArgumentList $Message
        New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, ('{0},Microsoft.PowerShell.Commands.GetWinEventCommand' -f $ErrorId), 'ObjectNotFound', $null)
    }
}

AfterAll {
    $env:ProgramData = $script:SavedProgramData
}

Describe 'collect-logs' {
    BeforeEach {
        Set-WuFixtureMocks -Fixture (Get-WuFixture -Scenario 'component-store-corrupt')
        $script:Cbs = Join-Path -Path $TestDrive -ChildPath 'CBS.log'
        $script:Dism = Join-Path -Path $TestDrive -ChildPath 'dism.log'
        $cbsLines = @(1..200 | ForEach-Object -Process { '2025-11-20 09:00:00, Info                  CBS    routine line {0:D3}' -f $_ })
        $cbsLines += "2025-11-20 10:00:00, Info                  CSI    00000001 (p)`tCSI Payload Corrupt`t`t`t(n)`tamd64_microsoft-windows-msvcp_win\msvcp_win.dll"
        Write-TestLog -Path $script:Cbs -Lines $cbsLines
        Write-TestLog -Path $script:Dism -Lines @('2025-11-20 10:05:00, Error                 DISM   DISM.EXE: DISM Package Manager processed the command line but failed. HRESULT=800F081F')
        Mock Join-Path -ParameterFilter { $ChildPath -eq 'Logs\CBS\CBS.log' } { $script:Cbs }
        Mock Join-Path -ParameterFilter { $ChildPath -eq 'Logs\DISM\dism.log' } { $script:Dism }
        # Get-WinEvent answers newest first.
        Mock Get-WinEvent -ParameterFilter { $LogName -eq $script:UpdateClientLog } {
            [pscustomobject]@{ Id = 20; Level = 2; TimeCreated = [datetime]'2025-11-19T03:00:00Z'
                Message = "Installation Failure: Windows failed to install the following update with error 0x80073712: 2025-11 Cumulative Update (KB5068787).`r`nSecond line." }
            [pscustomobject]@{ Id = 26; Level = 4; TimeCreated = [datetime]'2025-11-18T03:00:00Z'; Message = 'Windows Update successfully found 1 updates.' }
        }
    }

    It 'returns each tail cut at the front to whole lines within MaxBytes' {
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ MaxBytes = 1024 }
        $run.ExitCode | Should -Be 0
        $cbs = $run.Result.facts.logs['CBS.log']
        $cbs.truncated | Should -BeTrue
        $cbs.bytes_total | Should -Be (Get-Item -LiteralPath $script:Cbs).Length
        [System.Text.Encoding]::UTF8.GetByteCount($cbs.text) | Should -BeLessOrEqual 1024
        $cbs.text | Should -Match '^2025-11-20 09:00:00, Info +CBS +routine line \d{3}\r\n'
        $cbs.text | Should -Match 'CSI Payload Corrupt.*\r\n$'
        $run.Result.facts.logs['dism.log'].truncated | Should -BeFalse
        $run.Result.facts.logs['dism.log'].text | Should -Match 'HRESULT=800F081F'
        @($run.Result.facts.errors).Count | Should -Be 0
    }

    It 'reads CBS.log while another process holds it open for writing' {
        $writer = New-Object -TypeName System.IO.FileStream -ArgumentList @($script:Cbs, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
        try {
            $run = Invoke-WuTestStep -Path $script:Payload
        }
        finally {
            $writer.Dispose()
        }
        $run.Result.facts.logs['CBS.log'].text | Should -Match 'routine line 001'
        $run.Result.facts.logs['CBS.log'].truncated | Should -BeFalse
    }

    It 'renders events one line each, oldest first, first message line only' {
        $run = Invoke-WuTestStep -Path $script:Payload
        $lines = @($run.Result.facts.logs['WindowsUpdateClient'].text -split "`r`n" | Where-Object -FilterScript { $_ })
        $lines.Count | Should -Be 2
        $lines[0] | Should -Be '2025-11-18T03:00:00.0000000Z 26 Information Windows Update successfully found 1 updates.'
        $lines[1] | Should -Match '^2025-11-19T03:00:00\.0000000Z 20 Error Installation Failure: .*0x80073712.*\(KB5068787\)\.$'
    }

    It 'keeps the newest events when they do not all fit' {
        Mock Get-WinEvent -ParameterFilter { $LogName -eq $script:UpdateClientLog } {
            foreach ($day in 1..60) {
                [pscustomobject]@{ Id = 26; Level = 4; TimeCreated = ([datetime]'2025-11-20T03:00:00Z').AddDays(-$day); Message = 'Windows Update successfully found 0 updates.' }
            }
        }
        $run = Invoke-WuTestStep -Path $script:Payload -Parameters @{ MaxBytes = 1024 }
        $log = $run.Result.facts.logs['WindowsUpdateClient']
        $log.truncated | Should -BeTrue
        [System.Text.Encoding]::UTF8.GetByteCount($log.text) | Should -BeLessOrEqual 1024
        $log.text | Should -Match '2025-11-19T03:00:00\.0000000Z 26 Information [^\r\n]+\r\n$'
    }

    It 'lists a missing log in facts.errors and still returns the others' {
        Remove-Item -LiteralPath $script:Dism
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 0
        @($run.Result.facts.errors) | Should -HaveCount 1
        @($run.Result.facts.errors)[0] | Should -BeLike 'dism.log: not found*'
        $run.Result.facts.logs.Keys | Should -Not -Contain 'dism.log'
        $run.Result.facts.logs['CBS.log'].text | Should -Match 'CSI Payload Corrupt'
    }

    It 'counts an empty event log as read' {
        Mock Get-WinEvent -ParameterFilter { $LogName -eq $script:UpdateClientLog } {
            throw (New-TestEventError -Message 'No events were found that match the specified selection criteria.' -ErrorId 'NoMatchingEventsFound')
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.Result.facts.logs['WindowsUpdateClient'].text | Should -Be ''
        @($run.Result.facts.errors).Count | Should -Be 0
    }

    It 'fails (exit 1) when no log can be read' {
        Remove-Item -LiteralPath $script:Cbs, $script:Dism
        Mock Get-WinEvent -ParameterFilter { $LogName -eq $script:UpdateClientLog } {
            throw (New-TestEventError -Message ('There is not an event log on the localhost computer that matches "{0}".' -f $script:UpdateClientLog) -ErrorId 'NoMatchingLogsFound')
        }
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 1
        $run.Result.status | Should -Be 'failed'
        @($run.Result.facts.errors) | Should -HaveCount 3
        @($run.Result.facts.errors)[2] | Should -BeLike 'WindowsUpdateClient: There is not an event log*'
    }

    It 'refuses without an elevated session (exit 5) and reads nothing' {
        $script:WuFixture.cmdlets.elevated = $false  # what the fixture's Test-WuElevated mock answers
        $run = Invoke-WuTestStep -Path $script:Payload
        $run.ExitCode | Should -Be 5
        Should -Invoke Get-WinEvent -Times 0 -Exactly
    }
}
