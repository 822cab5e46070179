"""The Waybill process: CLI, settings, gRPC services, health, reflection, logs, shutdown."""
