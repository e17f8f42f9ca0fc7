"""Integrations with frameworks fcgipool does not depend on; each module imports its framework when imported."""
