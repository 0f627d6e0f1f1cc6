# Code samples of ../shared/reference/mqtt-diagnostics-guide.txt, unchanged except their import line, so a test
# can prove nwp500d runs them. Do not edit the sample bodies.
# ruff: noqa
# mypy: ignore-errors
import asyncio
import logging
from pathlib import Path
from datetime import datetime

from tests.integration.guide_shim import (
    NavienAuthClient,
    NavienMqttClient,
    MqttDiagnosticsCollector,
    MqttConnectionConfig,
    email,
    password,
)

_logger = logging.getLogger(__name__)


# --- Phase 1.1 "Instrument Your Code"
async def main():
    diagnostics = MqttDiagnosticsCollector(enable_verbose_logging=True)

    async with NavienAuthClient(email, password) as auth_client:
        await auth_client.sign_in()
        mqtt_client = NavienMqttClient(auth_client)

        # Hook connection events
        mqtt_client.on('connection_interrupted',
            lambda event: asyncio.create_task(
                 diagnostics.record_connection_drop(
                     error=event.error,
                    queued_commands=mqtt_client.queued_commands_count
                )
            )
        )

        mqtt_client.on('connection_resumed',
            lambda event: asyncio.create_task(
                 diagnostics.record_connection_success(
                     event_type='resumed',
                     session_present=event.session_present,
                     return_code=event.return_code
                )
            )
        )

        await mqtt_client.connect()
        # ... rest of application ...


# --- "Device Control Integration"
async def control_device_with_diagnostics(
    mqtt_client,
    diagnostics,
    device,
):
    """Control device and track in diagnostics."""

    try:
        # Record publish
        diagnostics.record_publish(queued=not mqtt_client.is_connected)

        # Set temperature
        await mqtt_client.set_dhw_temperature(device, 140.0)

        if not mqtt_client.is_connected:
            _logger.info(
                f"Device disconnected, command queued. "
                f"Total queued: {mqtt_client.queued_commands_count}"
            )

    except Exception as e:
        _logger.error(f"Error controlling device: {e}")
        raise


# --- "Class-Based Monitoring"
class MqttMonitor:
    """Production-ready MQTT monitor with diagnostics."""

    def __init__(
        self,
        email: str,
        password: str,
        output_dir: str = "./mqtt_diagnostics",
        export_interval: float = 300.0,
    ):
        self.email = email
        self.password = password
        self.output_dir = Path(output_dir)
        self.export_interval = export_interval
        self.output_dir.mkdir(exist_ok=True)

        self.diagnostics = MqttDiagnosticsCollector(enable_verbose_logging=True)
        self.mqtt_client = None
        self.auth_client = None
        self.running = True

    async def start(self) -> None:
        """Start the monitor."""
        try:
            self.auth_client = NavienAuthClient(self.email, self.password)
            await self.auth_client.sign_in()
            _logger.info("Authenticated successfully")

            config = MqttConnectionConfig(
                keep_alive_secs=60,
                initial_reconnect_delay=0.5,
                max_reconnect_delay=60.0,
                deep_reconnect_threshold=5,
                max_reconnect_attempts=-1,
                enable_command_queue=True,
            )

            self.mqtt_client = NavienMqttClient(self.auth_client, config=config)

            self.mqtt_client.on('connection_interrupted',
                lambda event: asyncio.create_task(self._on_drop(event.error))
            )

            self.mqtt_client.on('connection_resumed',
                lambda event: asyncio.create_task(self._on_resume(event.return_code, event.session_present))
            )

            await self.mqtt_client.connect()
            _logger.info("Connected to MQTT broker")

            await self._periodic_export_loop()

        finally:
            await self.stop()

    async def _on_drop(self, error: Exception) -> None:
        """Handle connection drop."""
        _logger.warning(f"Connection dropped: {error}")

        active_subs = (
            len(self.mqtt_client._subscription_manager.subscriptions)
            if (
                self.mqtt_client
                and self.mqtt_client._subscription_manager
            )
            else 0
        )

        await self.diagnostics.record_connection_drop(
            error=error,
            active_subscriptions=active_subs,
            queued_commands=(
                self.mqtt_client.queued_commands_count
                if self.mqtt_client
                else 0
            ),
        )

    async def _on_resume(self, return_code: int, session_present: bool) -> None:
        """Handle connection resume."""
        _logger.info(
            f"Connection resumed: rc={return_code}, "
            f"session_present={session_present}"
        )

        await self.diagnostics.record_connection_success(
            event_type="resumed",
            session_present=session_present,
            return_code=return_code,
        )

    async def _periodic_export_loop(self) -> None:
        """Periodically export diagnostics."""
        while self.running:
            try:
                await asyncio.sleep(self.export_interval)

                if not self.running:
                    break

                timestamp = datetime.utcnow().strftime("%Y%m%d_%H%M%S")
                output_file = self.output_dir / f"diagnostics_{timestamp}.json"

                json_data = self.diagnostics.export_json()
                with open(output_file, 'w') as f:
                    f.write(json_data)

                _logger.info(f"Exported diagnostics to {output_file}")
                self.diagnostics.print_summary()

            except asyncio.CancelledError:
                break

    async def stop(self) -> None:
        """Stop the monitor."""
        self.running = False

        if self.mqtt_client:
            await self.mqtt_client.disconnect()
            _logger.info("Disconnected from MQTT")

        if self.auth_client:
            await self.auth_client.close()
            _logger.info("Closed auth session")
