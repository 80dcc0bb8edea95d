@echo off
rem install.ps1's steps for cmd.exe: run elevated from the unpacked package folder.
rem   install.cmd [DESTINATION]   (default %ProgramFiles%\agentd)
setlocal
set "SOURCE=%~dp0"
set "DEST=%~1"
if "%DEST%"=="" set "DEST=%ProgramFiles%\agentd"
set "DATA=%ProgramData%\agentd"
set "PY=%DEST%\python\python.exe"

rem an earlier install: its service goes first (configuration and state stay)
if exist "%PY%" "%PY%" -m agentd service uninstall
rem "if errorlevel" after each step, not "||": Wine 8's cmd.exe runs the "||" branch of an
rem external command that succeeded (tests/windows/README.md)
xcopy "%SOURCE%*" "%DEST%\" /E /I /Q /Y >nul
if errorlevel 1 exit /b 1
if not exist "%DATA%" mkdir "%DATA%"
if not exist "%DATA%" exit /b 1
icacls "%DATA%" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" >nul
if errorlevel 1 exit /b 1
if not exist "%DATA%\agentd.toml" copy "%SOURCE%agentd.toml.example" "%DATA%\agentd.toml" >nul
"%PY%" -m agentd service install
if errorlevel 1 exit /b 1
"%PY%" -m agentd service start
if errorlevel 1 exit /b 1
"%PY%" -m agentd service status
exit /b 0
