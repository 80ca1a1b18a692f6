package app

import (
	"bytes"
	"fmt"
	"os"

	yaml "go.yaml.in/yaml/v3"
)

// eraseToken blanks modules.edgeHub.token in the config file once certificates exist: the token is a
// credential and must not linger on disk. Comments and layout are kept, since people edit this file by hand.
func eraseToken(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("erasing join token: reading %s: %w", path, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("erasing join token: parsing %s: %w", path, err)
	}
	tok := lookup(&doc, "modules", "edgeHub", "token")
	if tok == nil || tok.Value == "" {
		return nil
	}
	tok.Value, tok.Tag, tok.Style = "", "!!str", yaml.DoubleQuotedStyle
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("erasing join token: encoding %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("erasing join token: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), st.Mode().Perm()); err != nil {
		return fmt.Errorf("erasing join token: writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("erasing join token: replacing %s: %w", path, err)
	}
	return nil
}

// lookup follows mapping keys from a document node; nil when a key is missing.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}
