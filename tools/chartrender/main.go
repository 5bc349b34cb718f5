// Command chartrender renders a Helm chart the way `helm template` does, without Helm.
//
// Helm's template engine is Go's text/template with the sprig function library plus a few
// functions of Helm's own; this program puts the same parts together from Debian's Go packages
// (sprig 3, ghodss/yaml over yaml.v2 as Helm's sigs.k8s.io/yaml, xeipuuv/gojsonschema as Helm
// 3's schema check), so a chart is rendered by the engine Helm uses, not by an imitation of it.
// It is built offline in GOPATH mode by scripts/setup.d/chartrender.sh.
//
//	chartrender [-f values.yaml]... [--set a.b=c]... [--name NAME] [--namespace NS]
//	            [--include-crds] [--notes] [--kube-version v1.20.2] CHART_DIR
//
// What it does, step by step as Helm 3 does it for `helm template` / `helm install --dry-run`:
//   - values: the chart's values.yaml, then each -f file, then each --set, merged the way Helm
//     coalesces them (maps merge key by key, anything else replaces, a null removes the key);
//     numbers read from YAML are float64, as in Helm (sigs.k8s.io/yaml goes through JSON);
//   - values.schema.json, when present, is checked against the merged values (Helm 3 uses
//     gojsonschema); a failure is printed as Helm prints it and the exit status is 1;
//   - the top-level objects .Values, .Release (Name, Namespace, Service "Helm", IsInstall,
//     IsUpgrade, Revision), .Chart (Chart.yaml's fields, capitalised as Helm's chart.Metadata),
//     .Capabilities (KubeVersion, APIVersions.Has, HelmVersion) and .Template (Name, BasePath);
//   - every file under templates/ is parsed into one template set, named <chart>/templates/<path>,
//     in Helm's order (deeper paths first, then names descending: of two `define`s of one name
//     the top-level, first-named file's wins), so `define` in _helpers.tpl is seen by `include`
//     everywhere; files whose name starts with `_` are not rendered themselves; "<no value>" is
//     replaced by "" (missingkey=zero);
//   - functions: sprig.TxtFuncMap() without env/expandenv, and Helm's toYaml (trailing newline
//     trimmed), fromYaml, fromYamlArray, toJson, fromJson, fromJsonArray, include, tpl,
//     required, fail (lookup answers an empty map, as in `helm template`);
//   - output: each rendered file is split into YAML documents at `---` lines, empty ones are
//     dropped, the documents are ordered by Helm's install order of kinds (stable; unknown
//     kinds last, by name) and printed as "---\n# Source: <chart>/templates/<file>\n<doc>\n";
//     with --include-crds the crds/ files come first, verbatim, as Helm prints them;
//   - --notes prints the rendered templates/NOTES.txt instead of the manifests.
//
// Not supported (an error where it matters): subcharts (charts/, dependencies), .Files,
// hooks (rendered as plain manifests), --set list indices, escapes and commas.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"unicode"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
	"github.com/xeipuuv/gojsonschema"
)

// multiFlag collects a repeatable flag (-f, --set).
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// versionSet is .Capabilities.APIVersions; templates call .Has "apps/v1".
type versionSet []string

// Has reports whether the API version (or version/Kind) is known.
func (v versionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type kubeVersion struct {
	Version, Major, Minor string
}

// String lets `{{ .Capabilities.KubeVersion }}` print the version, as in Helm.
func (k kubeVersion) String() string { return k.Version }

// GitVersion is the deprecated alias Helm still offers.
func (k kubeVersion) GitVersion() string { return k.Version }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions versionSet
	HelmVersion map[string]string
}

// The API versions of the test cluster's kube-apiserver (v1.20) that charts ask about.
var defaultAPIVersions = versionSet{
	"v1", "apps/v1", "batch/v1", "batch/v1beta1", "policy/v1beta1", "rbac.authorization.k8s.io/v1",
	"networking.k8s.io/v1", "apiextensions.k8s.io/v1", "scheduling.k8s.io/v1",
	"storage.k8s.io/v1", "autoscaling/v1", "autoscaling/v2beta2", "coordination.k8s.io/v1",
	"discovery.k8s.io/v1beta1", "admissionregistration.k8s.io/v1", "certificates.k8s.io/v1",
}

// installOrder is Helm's InstallOrder: the kinds in the order `helm template` prints them.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
	"ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
	"DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

// Markers around the message of `required` and `fail`, so that the message can be cut out of
// text/template's wrapping ("template: x:3:4: executing ... error calling required: MSG").
const errStart, errEnd = "CHARTRENDER_ERR_START", "CHARTRENDER_ERR_END"

var errMarked = regexp.MustCompile(errStart + `((?s).*)` + errEnd)

func main() {
	var valueFiles, sets multiFlag
	name := flag.String("name", "release-name", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	includeCRDs := flag.Bool("include-crds", false, "print the chart's crds/ files first")
	notes := flag.Bool("notes", false, "print the rendered templates/NOTES.txt instead of the manifests")
	kube := flag.String("kube-version", "v1.20.2", ".Capabilities.KubeVersion")
	flag.Var(&valueFiles, "f", "values file (repeatable; later ones win)")
	flag.Var(&sets, "set", "a.b.c=value (repeatable; after the -f files)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: chartrender [flags] CHART_DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	out, err := run(flag.Arg(0), *name, *namespace, *kube, valueFiles, sets, *includeCRDs, *notes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func run(chartDir, name, namespace, kube string, valueFiles, sets []string,
	includeCRDs, notes bool) (string, error) {
	meta, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chartName, _ := meta["name"].(string)
	if chartName == "" {
		return "", fmt.Errorf("%s/Chart.yaml: no name", chartDir)
	}
	if _, err := os.Stat(filepath.Join(chartDir, "charts")); err == nil {
		return "", fmt.Errorf("%s: subcharts (charts/) are not supported", chartDir)
	}
	if deps, ok := meta["dependencies"]; ok && deps != nil {
		return "", fmt.Errorf("%s: dependencies are not supported", chartDir)
	}
	values, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if values == nil {
		values = map[string]interface{}{}
	}
	user := map[string]interface{}{}
	for _, f := range valueFiles {
		v, err := readYAMLMap(f)
		if err != nil {
			return "", err
		}
		user = mergeMaps(user, v)
	}
	for _, s := range sets {
		if err := setValue(user, s); err != nil {
			return "", err
		}
	}
	values = coalesce(user, values)
	if err := validateSchema(chartDir, chartName, values); err != nil {
		return "", err
	}

	major, minor := splitKubeVersion(kube)
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": chartObject(meta),
		"Capabilities": capabilities{
			KubeVersion: kubeVersion{Version: kube, Major: major, Minor: minor},
			APIVersions: defaultAPIVersions,
			HelmVersion: map[string]string{"Version": "v3-compatible (chartrender)"},
		},
	}
	rendered, err := renderTemplates(chartDir, chartName, top)
	if err != nil {
		return "", err
	}
	notesName := chartName + "/templates/NOTES.txt"
	if notes {
		text, ok := rendered[notesName]
		if !ok {
			return "", fmt.Errorf("%s: no templates/NOTES.txt", chartDir)
		}
		return text, nil
	}
	delete(rendered, notesName)
	var b strings.Builder
	if includeCRDs {
		crds, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
		sort.Strings(crds)
		for _, p := range crds {
			data, err := os.ReadFile(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "---\n# Source: %s/crds/%s\n%s\n", chartName, filepath.Base(p), data)
		}
	}
	docs, err := sortedDocuments(rendered)
	if err != nil {
		return "", err
	}
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.source, d.content)
	}
	return b.String(), nil
}

// readYAMLMap reads a YAML mapping as Helm does (through JSON: numbers become float64).
func readYAMLMap(p string) (map[string]interface{}, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", p, err)
	}
	return m, nil
}

// mergeMaps merges b over a: maps key by key, anything else replaced (Helm's mergeMaps for
// several -f files).
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if om, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(om, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce puts the user's values over the chart's defaults as Helm does: maps merge, other
// values replace, and a user's null deletes the key (and its default).
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(defaults))
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range user {
		if v == nil {
			delete(out, k)
			continue
		}
		um, uok := v.(map[string]interface{})
		dm, dok := out[k].(map[string]interface{})
		if uok && dok {
			out[k] = coalesce(um, dm)
		} else {
			out[k] = v
		}
	}
	return out
}

// setValue applies one `--set a.b.c=value`, typed as Helm's strvals types a value: integers
// (int64), true/false, null, else a string. Lists, escapes and commas are refused.
func setValue(into map[string]interface{}, expr string) error {
	key, raw, ok := strings.Cut(expr, "=")
	if !ok || key == "" || strings.ContainsAny(expr, "[],\\") {
		return fmt.Errorf("--set %q: only a.b.c=value is supported", expr)
	}
	var v interface{} = raw
	switch raw {
	case "true":
		v = true
	case "false":
		v = false
	case "null":
		v = nil
	default:
		if i, err := strconv.ParseInt(raw, 10, 64); err == nil && (raw == "0" || !strings.HasPrefix(raw, "0")) {
			v = i
		}
	}
	parts := strings.Split(key, ".")
	node := into
	for _, p := range parts[:len(parts)-1] {
		next, ok := node[p].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			node[p] = next
		}
		node = next
	}
	node[parts[len(parts)-1]] = v
	return nil
}

// validateSchema checks values against values.schema.json, when the chart has one, with the
// library and message format of Helm 3.
func validateSchema(chartDir, chartName string, values map[string]interface{}) error {
	schema, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	doc, err := json.Marshal(values)
	if err != nil {
		return err
	}
	res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("%s/values.schema.json: %v", chartDir, err)
	}
	if res.Valid() {
		return nil
	}
	var sb strings.Builder
	sb.WriteString("values don't meet the specifications of the schema(s) in the following chart(s):\n")
	sb.WriteString(chartName + ":\n")
	for _, e := range res.Errors() {
		fmt.Fprintf(&sb, "- %s\n", e)
	}
	return errors.New(strings.TrimSuffix(sb.String(), "\n"))
}

// chartObject is .Chart: Chart.yaml's keys with Helm's Go field names (name -> Name,
// appVersion -> AppVersion, apiVersion -> APIVersion, kubeVersion -> KubeVersion).
func chartObject(meta map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range meta {
		switch k {
		case "apiVersion":
			out["APIVersion"] = v
		default:
			out[strings.ToUpper(k[:1])+k[1:]] = v
		}
	}
	for _, k := range []string{"Name", "Version", "AppVersion", "Description", "Type", "KubeVersion"} {
		if _, ok := out[k]; !ok {
			out[k] = ""
		}
	}
	return out
}

func splitKubeVersion(v string) (string, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return parts[0], ""
	}
	return parts[0], parts[1]
}

// renderTemplates parses every file under templates/ into one set and executes each file whose
// name does not start with "_"; the result maps <chart>/templates/<path> to its text.
func renderTemplates(chartDir, chartName string, top map[string]interface{}) (map[string]string, error) {
	root := filepath.Join(chartDir, "templates")
	var names []string
	sources := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n := chartName + "/templates/" + filepath.ToSlash(rel)
		names = append(names, n)
		sources[n] = string(data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Helm's parse order: deeper paths first, then by name descending; a `define` parsed later
	// replaces an earlier one of the same name, so the top-level, first-named file's wins.
	sort.Slice(names, func(i, j int) bool {
		di, dj := strings.Count(names[i], "/"), strings.Count(names[j], "/")
		if di != dj {
			return di > dj
		}
		return names[i] > names[j]
	})

	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(funcMap(t))
	for _, n := range names {
		if _, err := t.New(n).Parse(sources[n]); err != nil {
			return nil, fmt.Errorf("parse error: %v", err)
		}
	}
	out := map[string]string{}
	for _, n := range names {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		vals := make(map[string]interface{}, len(top)+1)
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = map[string]interface{}{"Name": n, "BasePath": chartName + "/templates"}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, n, vals); err != nil {
			if m := errMarked.FindStringSubmatch(err.Error()); m != nil {
				loc := strings.SplitN(err.Error(), ": ", 3)
				return nil, fmt.Errorf("execution error at (%s): %s", strings.TrimPrefix(loc[1], "template: "), m[1])
			}
			return nil, err
		}
		out[n] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return out, nil
}

// funcMap is sprig's text functions plus Helm's own; include and tpl close over the set t.
func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env") // Helm removes these two: a chart must not read the renderer's environment
	delete(f, "expandenv")
	depth := map[string]int{}
	var include func(string, interface{}) (string, error)
	include = func(name string, data interface{}) (string, error) {
		if depth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["include"] = include
	f["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		// Clone does not carry the missingkey option over (Go issue 43022); Helm sets it again.
		c.Option("missingkey=zero")
		c.Funcs(funcMap(c))
		c, err = c.New(t.Name()).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", text, err)
		}
		var buf strings.Builder
		if err := c.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %v", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if s, ok := v.(string); v == nil || (ok && s == "") {
			return v, errors.New(errStart + msg + errEnd)
		}
		return v, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(errStart + msg + errEnd) }
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	f["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return "" // Helm swallows the error inside a template
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromYamlArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := yaml.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(s string) []interface{} {
		a := []interface{}{}
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	return f
}

type document struct {
	source, content, kind string
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*`)

// sortedDocuments splits every rendered file into documents (Helm 3's SplitManifests: at
// `---` lines, each trimmed, empty ones dropped), files in name order, then sorts them stably
// by Helm's install order of kinds.
func sortedDocuments(rendered map[string]string) ([]document, error) {
	var names []string
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	var docs []document
	for _, n := range names {
		text := strings.TrimLeftFunc(rendered[n], unicode.IsSpace)
		for _, d := range docSeparator.Split(text, -1) {
			d = strings.TrimSpace(d)
			if d == "" {
				continue
			}
			var head struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(d), &head); err != nil {
				return nil, fmt.Errorf("YAML parse error on %s: %v", n, err)
			}
			docs = append(docs, document{source: n, content: d, kind: head.Kind})
		}
	}
	rank := map[string]int{}
	for i, k := range installOrder {
		rank[k] = i
	}
	sort.SliceStable(docs, func(i, j int) bool {
		a, aok := rank[docs[i].kind]
		b, bok := rank[docs[j].kind]
		switch {
		case !aok && !bok:
			return docs[i].kind < docs[j].kind
		case !aok:
			return false
		case !bok:
			return true
		}
		return a < b
	})
	return docs, nil
}
