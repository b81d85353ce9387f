package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// overlays are the deployable kustomizations; base is rendered too, for the schema check.
var overlays = []string{"kubernetes/overlays/local-blob", "kubernetes/overlays/s3"}

// rendered is one kustomization, decoded.
type rendered struct {
	dir          string
	configMaps   map[string]*corev1.ConfigMap
	services     []*corev1.Service
	pvcs         map[string]*corev1.PersistentVolumeClaim
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	// objects lists every object as "Kind/name" with its metadata.namespace.
	objects map[string]string
}

func kubectl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found on PATH: cannot render the kustomizations (install kubectl to run this test)")
	}
	return p
}

// render runs kubectl kustomize on dir and strictly decodes every object.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl(t), "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	r := &rendered{dir: dir, configMaps: map[string]*corev1.ConfigMap{}, pvcs: map[string]*corev1.PersistentVolumeClaim{}, objects: map[string]string{}}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: document %d: %v", dir, i, err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			t.Fatalf("%s: document %d: %v", dir, i, err)
		}
		var om struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(js, &om); err != nil {
			t.Fatalf("%s: document %d: %v", dir, i, err)
		}
		r.objects[tm.Kind+"/"+om.Metadata.Name] = om.Metadata.Namespace
		var obj any
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			obj = &corev1.Namespace{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1/ConfigMap":
			cm := &corev1.ConfigMap{}
			obj = cm
			defer func() { r.configMaps[cm.Name] = cm }()
		case "v1/Service":
			s := &corev1.Service{}
			obj = s
			r.services = append(r.services, s)
		case "v1/PersistentVolumeClaim":
			p := &corev1.PersistentVolumeClaim{}
			obj = p
			defer func() { r.pvcs[p.Name] = p }()
		case "apps/v1/StatefulSet":
			s := &appsv1.StatefulSet{}
			obj = s
			r.statefulSets = append(r.statefulSets, s)
		case "apps/v1/Deployment":
			d := &appsv1.Deployment{}
			obj = d
			r.deployments = append(r.deployments, d)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			obj = h
			r.hpas = append(r.hpas, h)
		case "policy/v1/PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			obj = p
			r.pdbs = append(r.pdbs, p)
		default:
			t.Fatalf("%s: document %d: unexpected kind %s %s (add it to the test)", dir, i, tm.APIVersion, tm.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			t.Fatalf("%s: %s %s: not a valid object: %v", dir, tm.Kind, nameOf(js), err)
		}
	}
	return r
}

func nameOf(js []byte) string {
	var m struct {
		Metadata struct{ Name string } `json:"metadata"`
	}
	_ = json.Unmarshal(js, &m)
	return m.Metadata.Name
}

// TestRenderStrict renders the base and every overlay and decodes every object strictly.
func TestRenderStrict(t *testing.T) {
	for _, dir := range append([]string{"kubernetes/base"}, overlays...) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			if len(r.statefulSets) != 1 || len(r.deployments) != 1 || len(r.hpas) != 1 || len(r.pdbs) != 1 {
				t.Fatalf("want 1 StatefulSet, Deployment, HPA and PDB; got %d, %d, %d, %d",
					len(r.statefulSets), len(r.deployments), len(r.hpas), len(r.pdbs))
			}
		})
	}
}

// workload is a pod template with the binary it runs.
type workload struct {
	kind, name string
	binary     string
	pod        *corev1.PodTemplateSpec
}

func (r *rendered) workloads(t *testing.T) []workload {
	t.Helper()
	var ws []workload
	for _, s := range r.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, "", &s.Spec.Template})
	}
	for _, d := range r.deployments {
		ws = append(ws, workload{"Deployment", d.Name, "", &d.Spec.Template})
	}
	for i := range ws {
		c := ws[i].pod.Spec.Containers
		if len(c) != 1 || len(c[0].Command) == 0 {
			t.Fatalf("%s %s: want one container with a command", ws[i].kind, ws[i].name)
		}
		ws[i].binary = path.Base(c[0].Command[0])
	}
	return ws
}

// env resolves the container's environment: envFrom ConfigMaps, then env literals.
func (r *rendered) env(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm, ok := r.configMaps[ef.ConfigMapRef.Name]
		if !ok {
			t.Fatalf("container %s: ConfigMap %s not rendered", c.Name, ef.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func port(t *testing.T, what, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s = %q: %v", what, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s = %q: %v", what, addr, err)
	}
	return int32(n)
}

func containerPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func TestWorkloadsLineUp(t *testing.T) {
	flags := binaryFlags(t)
	binaries := dockerfileBinaries(t)
	for _, dir := range overlays {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			var images []string
			for _, w := range r.workloads(t) {
				c := &w.pod.Spec.Containers[0]
				images = append(images, c.Image)
				if !slices.Contains(binaries, c.Command[0]) {
					t.Errorf("%s: command %s is not a binary the Dockerfile installs (%v)", w.name, c.Command[0], binaries)
				}
				known, ok := flags[w.binary]
				if !ok {
					t.Fatalf("%s runs %s, which is not a paperfetch binary", w.name, w.binary)
				}
				env := r.env(t, c)
				checkFlags(t, w, c, env, known)
				checkPorts(t, w, c, env)
				checkSecurity(t, w, c)
				checkMounts(t, w, c, env)
				checkGrace(t, w, c, env)
			}
			for _, img := range images {
				if img != images[0] {
					t.Errorf("workloads run different images: %v", images)
				}
				if !strings.HasPrefix(img, "ghcr.io/paperfetch/paperfetch:") || strings.HasSuffix(img, ":latest") {
					t.Errorf("image %q: want ghcr.io/paperfetch/paperfetch with a pinned tag", img)
				}
			}
			checkServices(t, r)
			checkScaling(t, r)
		})
	}
}

// checkFlags: every PAPERFETCH_ variable and every --flag argument is a flag of the binary.
func checkFlags(t *testing.T, w workload, c *corev1.Container, env map[string]string, known map[string]bool) {
	t.Helper()
	for k := range env {
		if !strings.HasPrefix(k, "PAPERFETCH_") {
			continue
		}
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "PAPERFETCH_")), "_", "-")
		if !known[name] {
			t.Errorf("%s: %s sets --%s, which %s does not have", w.name, k, name, w.binary)
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "PAPERFETCH_") && e.ValueFrom != nil {
			name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.Name, "PAPERFETCH_")), "_", "-")
			if !known[name] {
				t.Errorf("%s: %s sets --%s, which %s does not have", w.name, e.Name, name, w.binary)
			}
		}
	}
	for _, a := range append(slices.Clone(c.Command[1:]), c.Args...) {
		if strings.HasPrefix(a, "-") {
			name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
			if !known[name] {
				t.Errorf("%s: argument %s is not a flag of %s", w.name, a, w.binary)
			}
		}
	}
}

// checkPorts: container ports match the listen flags; probes are native gRPC on the health port.
func checkPorts(t *testing.T, w workload, c *corev1.Container, env map[string]string) {
	t.Helper()
	for flagEnv, portName := range map[string]string{
		"PAPERFETCH_LISTEN":         "grpc",
		"PAPERFETCH_METRICS_LISTEN": "metrics",
		"PAPERFETCH_HEALTH_LISTEN":  "grpc-health",
		"PAPERFETCH_HTTP_LISTEN":    "http",
	} {
		addr, ok := env[flagEnv]
		if !ok {
			// The dashboard is the coordinator's; the health port is optional.
			if flagEnv != "PAPERFETCH_HEALTH_LISTEN" && (flagEnv != "PAPERFETCH_HTTP_LISTEN" || w.binary == "coordinator") {
				t.Errorf("%s: %s is not set", w.name, flagEnv)
			}
			continue
		}
		cp, ok := containerPort(c, portName)
		if !ok {
			t.Errorf("%s: no container port named %s", w.name, portName)
			continue
		}
		if want := port(t, flagEnv, addr); cp != want {
			t.Errorf("%s: port %s is %d but %s=%s", w.name, portName, cp, flagEnv, addr)
		}
	}
	// Native gRPC probes speak plaintext: with TLS on the main port they must use the
	// plaintext health port (--health-listen); without it, the main port.
	healthPort, _ := containerPort(c, "grpc")
	if env["PAPERFETCH_HEALTH_LISTEN"] != "" {
		healthPort, _ = containerPort(c, "grpc-health")
	} else if env["PAPERFETCH_TLS_CERT"] != "" {
		t.Errorf("%s: TLS on the gRPC port needs PAPERFETCH_HEALTH_LISTEN for the probes", w.name)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil {
			if name != "startup" {
				t.Errorf("%s: no %s probe", w.name, name)
			}
			continue
		}
		if p.GRPC == nil {
			t.Errorf("%s: %s probe is not a native gRPC probe", w.name, name)
			continue
		}
		if p.GRPC.Port != healthPort {
			t.Errorf("%s: %s probe on port %d, want the health port %d", w.name, name, p.GRPC.Port, healthPort)
		}
		wantService := ""
		if name == "liveness" {
			wantService = "liveness" // grpcserver.LivenessService: stays SERVING while draining
		}
		if got := ptrString(p.GRPC.Service); got != wantService {
			t.Errorf("%s: %s probe checks service %q, want %q", w.name, name, got, wantService)
		}
	}
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// checkSecurity: non-root, read-only root, no capabilities, RuntimeDefault seccomp, no token.
func checkSecurity(t *testing.T, w workload, c *corev1.Container) {
	t.Helper()
	ps := w.pod.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext must set runAsNonRoot and seccomp RuntimeDefault", w.name)
	}
	if ps != nil && (ps.RunAsUser == nil || *ps.RunAsUser == 0) {
		t.Errorf("%s: pod must run as a non-zero uid", w.name)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: container has no securityContext", w.name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem must be true", w.name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation must be false", w.name)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities must drop ALL and add none", w.name)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", w.name)
	}
	if w.pod.Spec.AutomountServiceAccountToken == nil || *w.pod.Spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false", w.name)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: cpu/memory requests and a memory limit are required", w.name)
	}
}

// checkMounts: every file named by a flag lives on a mounted volume that provides it, and
// everything the process writes is a volume (the root filesystem is read-only).
func checkMounts(t *testing.T, w workload, c *corev1.Container, env map[string]string) {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range w.pod.Spec.Volumes {
		vols[v.Name] = v
	}
	var claims []string
	if w.kind == "StatefulSet" {
		claims = []string{"data"}
	}
	mountFor := func(p string) (corev1.VolumeMount, bool) {
		for _, m := range c.VolumeMounts {
			if p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/") {
				return m, true
			}
		}
		return corev1.VolumeMount{}, false
	}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok && !slices.Contains(claims, m.Name) {
			t.Errorf("%s: mount %s has no volume", w.name, m.Name)
		}
	}
	for _, k := range []string{"PAPERFETCH_TLS_CERT", "PAPERFETCH_TLS_KEY", "PAPERFETCH_TLS_CLIENT_CA", "PAPERFETCH_TLS_CA", "PAPERFETCH_TOKENS", "PAPERFETCH_FETCHER_TOKENS", "PAPERFETCH_TOKEN_FILE"} {
		p, ok := env[k]
		if !ok {
			continue
		}
		m, ok := mountFor(p)
		if !ok {
			t.Errorf("%s: %s=%s is on no mounted volume", w.name, k, p)
			continue
		}
		v := vols[m.Name]
		if v.Secret == nil {
			t.Errorf("%s: %s=%s should come from a Secret", w.name, k, p)
			continue
		}
		if len(v.Secret.Items) > 0 {
			rel := strings.TrimPrefix(p, m.MountPath+"/")
			if !slices.ContainsFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == rel }) {
				t.Errorf("%s: %s=%s: Secret %s does not project %s", w.name, k, p, v.Secret.SecretName, rel)
			}
		}
	}
	writable := []string{"/tmp"}
	if d, ok := env["PAPERFETCH_DATA"]; ok {
		writable = append(writable, d)
	}
	if b := env["PAPERFETCH_BLOB"]; strings.HasPrefix(b, "file://") {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatalf("%s: PAPERFETCH_BLOB=%s: %v", w.name, b, err)
		}
		writable = append(writable, u.Path)
	}
	for _, p := range writable {
		if m, ok := mountFor(p); !ok || m.ReadOnly {
			t.Errorf("%s: %s must be a writable volume (read-only root filesystem)", w.name, p)
		}
	}
}

// checkGrace: terminationGracePeriodSeconds covers preStop, the fetcher's drain and the gRPC
// hard-stop timeout.
func checkGrace(t *testing.T, w workload, c *corev1.Container, env map[string]string) {
	t.Helper()
	dur := func(k string) time.Duration {
		v, ok := env[k]
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %s=%s: %v", w.name, k, v, err)
		}
		return d
	}
	need := dur("PAPERFETCH_DRAIN_GRACE") + dur("PAPERFETCH_GRPC_HARD_STOP_TIMEOUT")
	if dur("PAPERFETCH_GRPC_HARD_STOP_TIMEOUT") == 0 {
		need += 10 * time.Second // grpcserver.DefaultHardStopTimeout
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Errorf("%s: want a preStop sleep (endpoints are removed before SIGTERM)", w.name)
	} else {
		need += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	need += 5 * time.Second // margin: closing the store, flushing logs
	var grace time.Duration
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < need {
		t.Errorf("%s: terminationGracePeriodSeconds %v < %v (preStop + drain + hard stop + margin)", w.name, grace, need)
	}
	if w.binary == "fetcher" && dur("PAPERFETCH_DRAIN_GRACE") == 0 {
		t.Errorf("%s: set PAPERFETCH_DRAIN_GRACE explicitly so the grace period can be checked", w.name)
	}
}

// checkServices: selectors pick the pods and target ports exist.
func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	ws := r.workloads(t)
	for _, s := range r.services {
		matched := false
		for _, w := range ws {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				matched = true
				c := &w.pod.Spec.Containers[0]
				for _, p := range s.Spec.Ports {
					if p.TargetPort.StrVal != "" {
						if _, ok := containerPort(c, p.TargetPort.StrVal); !ok {
							t.Errorf("Service %s: targetPort %s is not a port of %s", s.Name, p.TargetPort.StrVal, w.name)
						}
					}
				}
			}
		}
		if !matched {
			t.Errorf("Service %s selects no pod", s.Name)
		}
	}
	// Operators reach the dashboard through the coordinator's Service.
	if !slices.ContainsFunc(r.services, func(s *corev1.Service) bool {
		return s.Name == "paperfetch-coordinator" && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
			return p.Name == "http" && p.TargetPort.StrVal == "http" && p.Port == 7480
		})
	}) {
		t.Error("Service paperfetch-coordinator does not expose the dashboard port (http → 7480)")
	}
	for _, ss := range r.statefulSets {
		if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
			t.Errorf("StatefulSet %s: the coordinator must run exactly one replica", ss.Name)
		}
		if !slices.ContainsFunc(r.services, func(s *corev1.Service) bool { return s.Name == ss.Spec.ServiceName && s.Spec.ClusterIP == "None" }) {
			t.Errorf("StatefulSet %s: governing headless Service %s missing", ss.Name, ss.Spec.ServiceName)
		}
		if !slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == "data" }) {
			t.Errorf("StatefulSet %s: no data volumeClaimTemplate", ss.Name)
		}
	}
	for _, w := range ws {
		for _, v := range w.pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				pvc, ok := r.pvcs[v.PersistentVolumeClaim.ClaimName]
				if !ok {
					t.Errorf("%s: PVC %s not rendered", w.name, v.PersistentVolumeClaim.ClaimName)
				} else if w.kind == "Deployment" && !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
					t.Errorf("%s: PVC %s is shared by many pods and must be ReadWriteMany", w.name, pvc.Name)
				}
			}
		}
	}
}

// checkScaling: the HPA targets the fetcher Deployment and the PDB selects its pods.
func checkScaling(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployments[0]
	for _, h := range r.hpas {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("HPA %s targets %s %s, want Deployment %s", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			t.Errorf("HPA %s: bad replica bounds", h.Name)
		}
	}
	if d.Spec.Replicas != nil && len(r.hpas) > 0 {
		t.Errorf("Deployment %s sets replicas (%d) while an HPA owns the count: every apply would reset it", d.Name, *d.Spec.Replicas)
	}
	for _, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PDB %s does not select the fetcher pods (%v)", p.Name, err)
		}
	}
}

func TestOverlayBlobStores(t *testing.T) {
	for _, tt := range []struct {
		dir   string
		check func(t *testing.T, r *rendered, w workload, blob string)
	}{
		{"kubernetes/overlays/local-blob", func(t *testing.T, r *rendered, w workload, blob string) {
			if blob != "file:///blobs" {
				t.Errorf("%s: PAPERFETCH_BLOB=%q, want file:///blobs", w.name, blob)
			}
		}},
		{"kubernetes/overlays/s3", func(t *testing.T, r *rendered, w workload, blob string) {
			u, err := url.Parse(blob)
			if err != nil || u.Scheme != "s3" || u.Host == "" {
				t.Fatalf("%s: PAPERFETCH_BLOB=%q is not an s3:// bucket URL (%v)", w.name, blob, err)
			}
			q := u.Query()
			if q.Get("endpoint") == "" || q.Get("region") == "" || q.Get("use_path_style") != "true" {
				t.Errorf("%s: %s needs endpoint, region and use_path_style=true", w.name, blob)
			}
			c := w.pod.Spec.Containers[0]
			if !slices.ContainsFunc(c.EnvFrom, func(e corev1.EnvFromSource) bool { return e.SecretRef != nil && e.SecretRef.Name == "paperfetch-s3" }) {
				t.Errorf("%s: AWS credentials must come from the Secret paperfetch-s3", w.name)
			}
		}},
	} {
		t.Run(filepath.Base(tt.dir), func(t *testing.T) {
			r := render(t, tt.dir)
			for _, w := range r.workloads(t) {
				env := r.env(t, &w.pod.Spec.Containers[0])
				tt.check(t, r, w, env["PAPERFETCH_BLOB"])
			}
		})
	}
}

// dockerfileBinaries lists the /usr/local/bin paths the Dockerfile installs.
func dockerfileBinaries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var bins []string
	for _, m := range regexp.MustCompile(`(?m)^COPY --from=build \S+ (/usr/local/bin/\S+)`).FindAllStringSubmatch(string(data), -1) {
		bins = append(bins, m[1])
	}
	for _, want := range []string{"coordinator", "fetcher", "paperfetch"} {
		if !slices.Contains(bins, "/usr/local/bin/"+want) {
			t.Errorf("Dockerfile does not install /usr/local/bin/%s", want)
		}
	}
	for _, want := range []string{"FROM golang:1.26", "CGO_ENABLED=0", "FROM gcr.io/distroless/static:nonroot", "USER nonroot"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	return bins
}

// binaryFlags builds the binaries of the main module and lists the flags each accepts (from
// its -h output).
func binaryFlags(t *testing.T) map[string]map[string]bool {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building the binaries")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goBin, "build", "-o", out+string(filepath.Separator), "./cmd/coordinator", "./cmd/fetcher")
	build.Dir = ".."
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, b)
	}
	flags := map[string]map[string]bool{}
	flagLine := regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9_.-]*)`)
	for _, bin := range []string{"coordinator", "fetcher"} {
		// Only the usage text matters, not the exit status.
		b, _ := exec.CommandContext(ctx, filepath.Join(out, bin), "-h").CombinedOutput()
		set := map[string]bool{}
		for _, m := range flagLine.FindAllStringSubmatch(string(b), -1) {
			set[m[1]] = true
		}
		if !set["listen"] {
			t.Fatalf("%s -h lists no --listen flag:\n%s", bin, b)
		}
		flags[bin] = set
	}
	t.Logf("coordinator: %d flags, fetcher: %d flags", len(flags["coordinator"]), len(flags["fetcher"]))
	return flags
}

// namespace is where every namespaced object of the deployment must live.
const namespace = "paperfetch"

// TestNamespaces: every object an overlay renders (including those the overlay adds itself,
// which the base's namespace does not reach) is in the paperfetch namespace.
func TestNamespaces(t *testing.T) {
	for _, dir := range append([]string{"kubernetes/base"}, overlays...) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			if len(r.objects) == 0 {
				t.Fatal("nothing rendered")
			}
			for obj, ns := range r.objects {
				if strings.HasPrefix(obj, "Namespace/") {
					continue // cluster-scoped
				}
				if ns != namespace {
					t.Errorf("%s: namespace %q, want %q", obj, ns, namespace)
				}
			}
		})
	}
}

// goMemLimit parses a GOMEMLIMIT value (bytes with an optional B, KiB, MiB, GiB, TiB suffix).
func goMemLimit(t *testing.T, v string) int64 {
	t.Helper()
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("GOMEMLIMIT=%q is not a literal size", v)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift
}

// TestGoMemLimitHeadroom: GOMEMLIMIT is set on every workload, below its memory limit with
// at least 10% headroom (memory the Go runtime does not account for: stacks of cgo-free
// threads, page-cache pressure, kernel buffers), and not so low that the GC runs for nothing.
func TestGoMemLimitHeadroom(t *testing.T) {
	for _, dir := range overlays {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			for _, w := range r.workloads(t) {
				c := &w.pod.Spec.Containers[0]
				lim, ok := c.Resources.Limits[corev1.ResourceMemory]
				if !ok {
					t.Fatalf("%s: no memory limit", w.name)
				}
				var gml *corev1.EnvVar
				for i := range c.Env {
					if c.Env[i].Name == "GOMEMLIMIT" {
						gml = &c.Env[i]
					}
				}
				if gml == nil {
					t.Fatalf("%s: GOMEMLIMIT not set", w.name)
				}
				if gml.ValueFrom != nil {
					t.Fatalf("%s: GOMEMLIMIT comes from %v: the whole limit, no headroom", w.name, gml.ValueFrom)
				}
				got, limit := goMemLimit(t, gml.Value), lim.Value()
				if got > limit*9/10 || got < limit*7/10 {
					t.Errorf("%s: GOMEMLIMIT %s is %.0f%% of the %s limit, want 70–90%%", w.name, gml.Value, 100*float64(got)/float64(limit), lim.String())
				}
			}
		})
	}
}

// TestImageVersion: the version the Dockerfile builds by default is the tag the manifests
// deploy, and the -X flag that stamps it names a variable that exists.
func TestImageVersion(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ARG VERSION=(\S+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("Dockerfile: no ARG VERSION=<default>")
	}
	version := string(m[1])
	x := regexp.MustCompile(`-X (github\.com/paperfetch/paperfetch/(\S+))\.(\w+)=\$\{VERSION\}`).FindSubmatch(data)
	if x == nil {
		t.Fatal("Dockerfile: the build does not stamp ${VERSION} with -X <package>.<var>")
	}
	src, err := os.ReadFile(filepath.Join("..", string(x[2]), "version.go"))
	if err != nil {
		t.Fatalf("-X %s.%s: %v", x[1], x[3], err)
	}
	if !regexp.MustCompile(`(?m)^var ` + string(x[3]) + ` = "` + regexp.QuoteMeta(version) + `"$`).Match(src) {
		t.Errorf("-X %s.%s: no string variable %s = %q there (the default must match the Dockerfile's)", x[1], x[3], x[3], version)
	}
	for _, dir := range overlays {
		r := render(t, dir)
		for _, w := range r.workloads(t) {
			if img := w.pod.Spec.Containers[0].Image; !strings.HasSuffix(img, ":"+version) {
				t.Errorf("%s: %s runs image %s, but the Dockerfile builds version %s", dir, w.name, img, version)
			}
		}
	}
}
