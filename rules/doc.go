// Package rules holds lagscope's rule profiles: YAML files under rules/,
// each a complete lagscope config holding only `rules:`, that a user passes
// as --config or pastes under rules: of lagscope.yaml (README.md here says
// what each matches and where its span names come from). The package has
// no code of its own: its tests load each profile with lagscope's config
// decoder and analyse a fixture of the spans the instrumentation emits,
// with the profile and without it.
package rules
