"""The link to the central supervision room: outbox -> MQTT, status, health, commands."""
