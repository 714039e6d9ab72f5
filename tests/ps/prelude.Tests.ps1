# Pester 5: the prelude's status-file writes are atomic on NTFS (issue 13, item 3). _helpers.ps1 loads
# the prelude's functions, so they are called here directly, on real files in TestDrive.
BeforeAll {
    . (Join-Path -Path $PSScriptRoot -ChildPath '_helpers.ps1')
}

Describe 'Write-WuTextFile and Read-WuSharedText' {
    BeforeEach {
        $script:Status = Join-Path -Path $TestDrive -ChildPath ('status-{0}.json' -f [guid]::NewGuid())
        Write-WuTextFile -Path $script:Status -Text '{"state":"queued"}'
    }

    It 'replaces the file while a delete-sharing reader holds it, and the reader keeps the old text' {
        $share = [System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete
        $reader = [System.IO.FileStream]::new($script:Status, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share)
        try {
            Write-WuTextFile -Path $script:Status -Text '{"state":"running"}' -Attempts 1
            $old = New-Object -TypeName System.IO.StreamReader -ArgumentList @($reader)
            $old.ReadToEnd() | Should -Be '{"state":"queued"}'
        }
        finally {
            $reader.Dispose()
        }
        Read-WuSharedText -Path $script:Status | Should -Be '{"state":"running"}'
    }

    It 'never leaves the file missing or half-written when a reader without delete sharing blocks it' {
        # Get-Content opens this way: ReadWrite sharing, no Delete.
        $holder = [System.IO.FileStream]::new($script:Status, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
        try {
            { Write-WuTextFile -Path $script:Status -Text '{"state":"finished"}' -Attempts 1 } | Should -Throw
            Test-Path -LiteralPath $script:Status | Should -BeTrue
            Read-WuSharedText -Path $script:Status | Should -Be '{"state":"queued"}'
            @(Get-ChildItem -LiteralPath $TestDrive -Filter '*.tmp-*').Count | Should -Be 0
        }
        finally {
            $holder.Dispose()
        }
        Write-WuTextFile -Path $script:Status -Text '{"state":"finished"}' -Attempts 1
        Read-WuSharedText -Path $script:Status | Should -Be '{"state":"finished"}'
    }

    It 'answers $null for a file that does not exist' {
        Read-WuSharedText -Path (Join-Path -Path $TestDrive -ChildPath 'absent.json') | Should -BeNullOrEmpty
    }
}

Describe 'Get-WuLoaderCommand' {
    It 'runs the staged script as a command, whatever the script-file policy, and only while its hash matches' {
        $path = Join-Path -Path $TestDrive -ChildPath 'staged.ps1'
        Write-WuTextFile -Path $path -Text 'exit 7' -Bom
        $encoded = Get-WuLoaderCommand -Path $path -Hash (Get-WuTextHash -Text 'exit 7')
        $powershell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'
        & $powershell -NoProfile -NonInteractive -ExecutionPolicy Restricted -EncodedCommand $encoded
        $LASTEXITCODE | Should -Be 7
        Write-WuTextFile -Path $path -Text 'exit 9' -Bom
        & $powershell -NoProfile -NonInteractive -EncodedCommand $encoded
        $LASTEXITCODE | Should -Be 1
    }
}

Describe 'ConvertTo-WuStartType' {
    It 'reads DelayedAutostart from the registry where Win32_Service has no DelayedAutoStart (before Server 2016)' {
        Mock Get-WuRegistryValue -ParameterFilter { $Name -eq 'DelayedAutostart' } { 1 }
        ConvertTo-WuStartType -Service ([pscustomobject]@{ Name = 'usosvc'; StartMode = 'Auto' }) | Should -Be 'AutomaticDelayed'
        ConvertTo-WuStartType -Service ([pscustomobject]@{ Name = 'usosvc'; StartMode = 'Auto'; DelayedAutoStart = $false }) | Should -Be 'Automatic'
    }
}
