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

Describe 'Protect-WuStateRoot' {
    # Real NTFS in TestDrive (issue 13, item 5): the runner is elevated, as every step is.
    BeforeEach {
        $script:SavedProgramData = $env:ProgramData
        $env:ProgramData = Join-Path -Path $TestDrive -ChildPath ('pd-{0}' -f [guid]::NewGuid())
        $null = New-Item -ItemType Directory -Path $env:ProgramData -Force
        $script:Root = Join-Path -Path $env:ProgramData -ChildPath 'wuremote'
    }
    AfterEach {
        $env:ProgramData = $script:SavedProgramData
    }

    It 'creates the folder with a protected ACL for SYSTEM and Administrators only' {
        Protect-WuStateRoot | Should -Be $script:Root
        $acl = Get-Acl -LiteralPath $script:Root
        $acl.AreAccessRulesProtected | Should -BeTrue
        $sids = @($acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]) |
                ForEach-Object -Process { $_.IdentityReference.Value } | Sort-Object -Unique)
        $sids | Should -Be @('S-1-5-18', 'S-1-5-32-544')
    }

    It 'refuses a child a user could write, and changes nothing in it' {
        $failsafe = Join-Path -Path $script:Root -ChildPath 'failsafe'
        $null = New-Item -ItemType Directory -Path $failsafe -Force
        $acl = Get-Acl -LiteralPath $failsafe
        $users = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList 'S-1-5-32-545'
        $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList @(
                    $users, 'Modify', 'ContainerInherit,ObjectInherit', 'None', 'Allow')))
        Set-Acl -LiteralPath $failsafe -AclObject $acl
        { Protect-WuStateRoot } | Should -Throw -ExpectedMessage '*failsafe: writable by S-1-5-32-545*'
        @((Get-Acl -LiteralPath $failsafe).Access | Where-Object -FilterScript { $_.IdentityReference.Value -match 'Users' }).Count | Should -BeGreaterThan 0
    }

    It 'refuses a junction in the tree and never follows it' {
        $target = Join-Path -Path $TestDrive -ChildPath ('elsewhere-{0}' -f [guid]::NewGuid())
        $null = New-Item -ItemType Directory -Path $target -Force
        Set-Content -LiteralPath (Join-Path -Path $target -ChildPath 'keep.txt') -Value 'keep'
        $runs = Join-Path -Path $script:Root -ChildPath 'runs'
        $null = New-Item -ItemType Directory -Path $runs -Force
        $null = New-Item -ItemType Junction -Path (Join-Path -Path $runs -ChildPath 'old') -Target $target
        { Protect-WuStateRoot } | Should -Throw -ExpectedMessage '*old: a junction or symbolic link*'
        Test-Path -LiteralPath (Join-Path -Path $target -ChildPath 'keep.txt') | Should -BeTrue
    }

    It 'refuses a state folder that is itself a junction' {
        $target = Join-Path -Path $TestDrive -ChildPath ('elsewhere-{0}' -f [guid]::NewGuid())
        $null = New-Item -ItemType Directory -Path $target -Force
        $null = New-Item -ItemType Junction -Path $script:Root -Target $target
        { Protect-WuStateRoot } | Should -Throw -ExpectedMessage '*is a junction or symbolic link*'
        (Get-Acl -LiteralPath $target).AreAccessRulesProtected | Should -BeFalse  # the ACL reset never went through the link
    }
}

Describe 'Test-WuClusterNode' {
    # Issue 13, item 15: the Failover Clustering feature installs ClusSvc on hosts that are no node.
    It 'tells a cluster node from a host that only has the feature installed' {
        Mock Test-Path -ParameterFilter { $LiteralPath -eq 'HKLM:\Cluster' } { $false }
        Test-WuClusterNode -Services @{} | Should -BeFalse
        Test-WuClusterNode -Services @{ clussvc = [pscustomobject]@{ StartMode = 'Disabled' } } | Should -BeFalse
        Test-WuClusterNode -Services @{ clussvc = [pscustomobject]@{ StartMode = 'Auto' } } | Should -BeTrue
    }

    It 'counts a node whose Cluster Service is disabled but whose cluster hive is loaded' {
        Mock Test-Path -ParameterFilter { $LiteralPath -eq 'HKLM:\Cluster' } { $true }
        Test-WuClusterNode -Services @{ clussvc = [pscustomobject]@{ StartMode = 'Disabled' } } | Should -BeTrue
    }
}
