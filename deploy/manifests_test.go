package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/smartmaintenance/relay/config"
)

// manifests are the Kubernetes manifests, each decoded strictly (an
// unknown or misspelt field is an error) into its API type.
type manifests struct {
	configMap   corev1.ConfigMap
	secret      corev1.Secret
	deployment  appsv1.Deployment
	service     corev1.Service
	pdb         policyv1.PodDisruptionBudget
	monitor     monitoringv1.ServiceMonitor
	promRule    monitoringv1.PrometheusRule
	kustomize   kustomization
	configPath  string // the ConfigMap's relay.yaml, written out
	relayConfig []byte
}

// kustomization is the part of kustomize's Kustomization the directory
// uses. kustomize's own types module is large for one small file; a strict
// decode into these fields catches a misspelt or unexpected field all the
// same.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Resources []string `json:"resources"`
}

func decodeStrict(t *testing.T, path string, into any, apiVersion, kind string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\n---")) {
		t.Fatalf("%s: one object per file", path)
	}
	if err := unmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if meta.APIVersion != apiVersion || meta.Kind != kind {
		t.Fatalf("%s: %s %s, want %s %s", path, meta.APIVersion, meta.Kind, apiVersion, kind)
	}
}

// unmarshalStrict decodes YAML as the Kubernetes API server does: field
// names match exactly (encoding/json would take readOnlyRootFileSystem
// for readOnlyRootFilesystem), and an unknown or repeated field is an
// error.
func unmarshalStrict(b []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, into)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{}
	dir := "kubernetes"
	for _, f := range []struct {
		file, apiVersion, kind string
		into                   any
	}{
		{"kustomization.yaml", "kustomize.config.k8s.io/v1beta1", "Kustomization", &m.kustomize},
		{"configmap.yaml", "v1", "ConfigMap", &m.configMap},
		{"secret.yaml", "v1", "Secret", &m.secret},
		{"deployment.yaml", "apps/v1", "Deployment", &m.deployment},
		{"service.yaml", "v1", "Service", &m.service},
		{"poddisruptionbudget.yaml", "policy/v1", "PodDisruptionBudget", &m.pdb},
		{"servicemonitor.yaml", "monitoring.coreos.com/v1", "ServiceMonitor", &m.monitor},
		{"prometheusrule.yaml", "monitoring.coreos.com/v1", "PrometheusRule", &m.promRule},
	} {
		decodeStrict(t, filepath.Join(dir, f.file), f.into, f.apiVersion, f.kind)
	}
	// Everything in the directory is applied by `kubectl apply -k`.
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if name != "kustomization.yaml" && !slices.Contains(m.kustomize.Resources, name) {
			t.Errorf("kustomization.yaml does not list %s", name)
		}
	}
	for _, r := range m.kustomize.Resources {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	m.relayConfig = []byte(m.configMap.Data["relay.yaml"])
	m.configPath = filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(m.configPath, m.relayConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return m
}

// secretValue is a key of the Secret, which the manifest writes as
// stringData.
func (m *manifests) secretValue(t *testing.T, key string) string {
	t.Helper()
	v, ok := m.secret.StringData[key]
	if !ok {
		t.Fatalf("the Secret has no key %q", key)
	}
	return v
}

// relayEnv is the environment the Deployment gives the relay, with the
// secrets key replaced by a real one when realKey is set (the manifest's is
// a placeholder).
func (m *manifests) relayEnv(t *testing.T, realKey bool) []string {
	t.Helper()
	c := m.deployment.Spec.Template.Spec.Containers[0]
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != m.secret.Name {
				t.Errorf("env %s: from Secret %q; the Secret is %q", e.Name, ref.Name, m.secret.Name)
				continue
			}
			v := m.secretValue(t, ref.Key)
			if e.Name == "RELAY_SECRETS__KEY" && realKey {
				k := make([]byte, 32)
				rand.Read(k)
				v = base64.StdEncoding.EncodeToString(k)
			}
			env = append(env, e.Name+"="+v)
		case e.ValueFrom != nil:
			t.Errorf("env %s: only Secret references are expected", e.Name)
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return env
}

func podLabels(m *manifests) map[string]string { return m.deployment.Spec.Template.Labels }

// matches reports whether the selector's labels all appear in labels.
func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func listenPort(t *testing.T, key, addr string) int32 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	return int32(n)
}

// The manifests decode strictly into the Kubernetes API types, and agree
// with each other and with the relay: the ConfigMap's file loads with the
// relay's own config.Load, the probes use the port the relay listens on,
// the selectors select the pods, the resources fit the measured memory.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	pod := d.Spec.Template.Spec

	// The relay's configuration, as the Deployment gives it.
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want the relay alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) || !slices.Contains(c.Args, "run") {
		t.Fatalf("container args %q: want run --config FILE", c.Args)
	}
	cfgFile := c.Args[i+1]
	var mounted bool
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(cfgFile) != filepath.Clean(vm.MountPath) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == m.configMap.Name {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--config %s is not in a volume of the ConfigMap %q", cfgFile, m.configMap.Name)
	}
	if _, ok := m.configMap.Data[filepath.Base(cfgFile)]; !ok {
		t.Errorf("the ConfigMap has no key %q for --config %s", filepath.Base(cfgFile), cfgFile)
	}

	// The Secret as shipped holds a placeholder key: a relay started from
	// it stops at once, naming the key, rather than storing secrets with it.
	if _, err := config.Load(m.configPath, m.relayEnv(t, false)); err == nil || !strings.Contains(err.Error(), "secrets.key") {
		t.Errorf("the Secret's placeholder key: config.Load says %v, want an error naming secrets.key", err)
	}
	cfg, err := config.Load(m.configPath, m.relayEnv(t, true))
	if err != nil {
		t.Fatalf("the ConfigMap's relay.yaml with the Secret's values: %v", err)
	}
	if cfg.Database.URL != m.secretValue(t, "database-url") {
		t.Errorf("database.url is %q, not the Secret's", cfg.Database.URL)
	}
	if cfg.Observability.Listen == "" {
		t.Fatal("observability.listen is off: nothing serves the probes or /metrics")
	}

	// Ports: the probes and the Service name the container's ports, which
	// are the ones the relay listens on.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != listenPort(t, "observability.listen", cfg.Observability.Listen) {
		t.Errorf("container port metrics is %d; observability.listen is %s", ports["metrics"], cfg.Observability.Listen)
	}
	if cfg.Admin.Listen != "" && ports["admin"] != listenPort(t, "admin.listen", cfg.Admin.Listen) {
		t.Errorf("container port admin is %d; admin.listen is %s", ports["admin"], cfg.Admin.Listen)
	}
	probePort := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an HTTP GET probe of %s", what, path)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s: path %s, want %s", what, p.HTTPGet.Path, path)
		}
		if p.HTTPGet.Port != intstr.FromString("metrics") {
			t.Errorf("%s: port %v, want the container port named metrics", what, p.HTTPGet.Port)
		}
	}
	probePort("livenessProbe", c.LivenessProbe, "/healthz")
	probePort("readinessProbe", c.ReadinessProbe, "/readyz")
	svcPorts := map[string]bool{}
	for _, p := range m.service.Spec.Ports {
		svcPorts[p.Name] = true
		if p.TargetPort.Type != intstr.String || ports[p.TargetPort.StrVal] == 0 {
			t.Errorf("Service port %s: target %v is not a named container port", p.Name, p.TargetPort)
		}
	}

	// Selectors.
	if d.Spec.Selector == nil || !matches(d.Spec.Selector.MatchLabels, podLabels(m)) {
		t.Errorf("the Deployment's selector does not select its pods")
	}
	if !matches(m.service.Spec.Selector, podLabels(m)) {
		t.Errorf("the Service's selector %v does not select the pods %v", m.service.Spec.Selector, podLabels(m))
	}
	if m.pdb.Spec.Selector == nil || !matches(m.pdb.Spec.Selector.MatchLabels, podLabels(m)) {
		t.Errorf("the PodDisruptionBudget's selector does not select the pods")
	}
	if !matches(m.monitor.Spec.Selector.MatchLabels, m.service.Labels) {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service %v", m.monitor.Spec.Selector.MatchLabels, m.service.Labels)
	}
	for _, ep := range m.monitor.Spec.Endpoints {
		if !svcPorts[ep.Port] {
			t.Errorf("the ServiceMonitor scrapes port %q, which the Service does not have", ep.Port)
		}
	}
	// The alert rules name the scrape job: under the ServiceMonitor it is
	// the Service's name.
	rules, err := os.ReadFile("prometheus/relay-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rules, []byte(`job="`+m.service.Name+`"`)) {
		t.Errorf("the alert rules do not name the job %q", m.service.Name)
	}

	// Two relays, one evictable at a time, never both down in a rollout.
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas: want 2 (one streams, one stands by)")
	}
	if m.pdb.Spec.MinAvailable == nil || m.pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("the PodDisruptionBudget: want minAvailable 1")
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update: want maxUnavailable 0")
	}

	// Shutdown: the drain and the recording after it (up to 5s) fit in the
	// grace period.
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace < cfg.Delivery.DrainTimeout+5*time.Second+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s leaves no room after delivery.drain_timeout %s", grace, cfg.Delivery.DrainTimeout)
	}

	// Memory: the RSS runs 15-20 MB above runtime.memory_limit; the backlog
	// bench peaks at 84 MB with the default 64MB (docs/PERFORMANCE.md).
	limit := c.Resources.Limits.Memory().Value()
	request := c.Resources.Requests.Memory().Value()
	if min := int64(cfg.Runtime.MemoryLimit) + 20<<20; limit < min*3/2 {
		t.Errorf("memory limit %d MiB: want at least half again runtime.memory_limit + 20 MB (%d MiB)", limit>>20, min>>20)
	}
	if request < 84<<20 || request > limit {
		t.Errorf("memory request %d MiB: want the measured peak (84 MB) up to the limit", request>>20)
	}

	// Hardening.
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext: want a read-only root, no privilege escalation, every capability dropped")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("pod securityContext: want runAsNonRoot")
	}
}

// The PrometheusRule holds exactly the groups of the rules file.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	m := loadManifests(t)
	b, err := os.ReadFile("prometheus/relay-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file monitoringv1.PrometheusRuleSpec
	if err := unmarshalStrict(b, &file); err != nil {
		t.Fatalf("relay-rules.yaml: %v", err)
	}
	if len(file.Groups) == 0 || !reflect.DeepEqual(file, m.promRule.Spec) {
		t.Errorf("kubernetes/prometheusrule.yaml's groups differ from prometheus/relay-rules.yaml's")
	}
}

// The Deployment runs the image the release builds, and the release image's
// Dockerfile copies the binaries the release builds.
func TestDeploymentRunsTheReleaseImage(t *testing.T) {
	m := loadManifests(t)
	b, err := os.ReadFile("../.goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rel struct {
		Builds []struct {
			Binary string   `json:"binary"`
			Goos   []string `json:"goos"`
			Goarch []string `json:"goarch"`
			Env    []string `json:"env"`
		} `json:"builds"`
		Dockers []struct {
			Dockerfile string   `json:"dockerfile"`
			Images     []string `json:"images"`
			Platforms  []string `json:"platforms"`
		} `json:"dockers_v2"`
	}
	if err := yaml.Unmarshal(b, &rel); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	if len(rel.Dockers) != 1 || len(rel.Builds) == 0 {
		t.Fatalf(".goreleaser.yaml: want builds and one image")
	}
	img := m.deployment.Spec.Template.Spec.Containers[0].Image
	repo, _, _ := strings.Cut(img, ":")
	if !slices.Contains(rel.Dockers[0].Images, repo) {
		t.Errorf("the Deployment runs %s; the release pushes %v", img, rel.Dockers[0].Images)
	}
	dockerfile, err := os.ReadFile(filepath.Join("..", rel.Dockers[0].Dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	for _, build := range rel.Builds {
		if !slices.Contains(build.Env, "CGO_ENABLED=0") {
			t.Errorf("build %s: want CGO_ENABLED=0 (static, for the distroless image)", build.Binary)
		}
		if !bytes.Contains(dockerfile, []byte("$TARGETPLATFORM/"+build.Binary+" ")) {
			t.Errorf("%s does not copy %s", rel.Dockers[0].Dockerfile, build.Binary)
		}
		for _, arch := range build.Goarch {
			if !slices.Contains(rel.Dockers[0].Platforms, "linux/"+arch) {
				t.Errorf("build %s for %s has no image platform", build.Binary, arch)
			}
		}
	}
}
