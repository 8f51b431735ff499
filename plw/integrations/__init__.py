"""plw.integrations: PLW inside other trainers' own pipelines (`plw.integrations.trl`)."""
