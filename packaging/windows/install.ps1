<#
.SYNOPSIS
  Installs agentd as a Windows service (for software distribution: Intune, SCCM, GPO).
.DESCRIPTION
  Run elevated from the unpacked package folder:
    powershell -ExecutionPolicy Bypass -File install.ps1 [-Config \\server\share\agentd.toml]
  1. stops and removes an earlier agentd service (an upgrade keeps configuration and state);
  2. copies this folder to $Destination (default %ProgramFiles%\agentd);
  3. creates %ProgramData%\agentd, restricted to SYSTEM and Administrators (state, logs,
     the configuration), and puts -Config there as agentd.toml, or the example when the
     folder has no agentd.toml yet;
  4. registers the service (agentd service install: LocalSystem, automatic start,
     restart on failure, event log source) and starts it.
  install.cmd does the same steps for machines without PowerShell.
#>
#Requires -RunAsAdministrator
param(
    [string]$Destination = (Join-Path $env:ProgramFiles "agentd"),
    [string]$Config = ""
)
$ErrorActionPreference = "Stop"
$Source = $PSScriptRoot
$Data = Join-Path $env:ProgramData "agentd"
$Python = Join-Path $Destination "python\python.exe"

if ((Get-Service -Name agentd -ErrorAction SilentlyContinue) -and (Test-Path $Python)) {
    & $Python -m agentd service uninstall
}
New-Item -ItemType Directory -Force -Path $Destination | Out-Null
Copy-Item -Path (Join-Path $Source "*") -Destination $Destination -Recurse -Force

New-Item -ItemType Directory -Force -Path $Data | Out-Null
& icacls.exe $Data /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { throw "icacls failed on $Data" }
$Target = Join-Path $Data "agentd.toml"
if ($Config) {
    Copy-Item -Path $Config -Destination $Target -Force
} elseif (-not (Test-Path $Target)) {
    Copy-Item -Path (Join-Path $Source "agentd.toml.example") -Destination $Target
}

& $Python -m agentd service install
if ($LASTEXITCODE -ne 0) { throw "agentd service install failed ($LASTEXITCODE)" }
& $Python -m agentd service start
if ($LASTEXITCODE -ne 0) { throw "agentd service start failed ($LASTEXITCODE)" }
& $Python -m agentd service status
