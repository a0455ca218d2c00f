"""The polybot mesh: messages, bus, config, service runtime, supervisor and CLI."""
