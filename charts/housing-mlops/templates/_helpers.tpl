{{/*
Helpers shared by the umbrella chart and its subcharts (postgresql, mlflow, training, promotion, inference).
Named templates are global in Helm, so the subcharts call these with their own context; everything that
crosses subcharts comes from `.Values.global`, never from a copy-pasted host name.
*/}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "housing-mlops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of a component's objects: <release>-<component>, e.g. `prod-mlflow`.
Usage: include "housing-mlops.fullname" (dict "context" $ "component" "mlflow")
*/}}
{{- define "housing-mlops.fullname" -}}
{{- printf "%s-%s" .context.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Standard labels; component labels come from one place.
Usage: include "housing-mlops.labels" (dict "context" $ "component" "mlflow")
*/}}
{{- define "housing-mlops.labels" -}}
{{ include "housing-mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: housing-mlops
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ include "housing-mlops.chart" .context }}
{{- with .context.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "housing-mlops.selectorLabels" -}}
app.kubernetes.io/name: housing-mlops
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Label carried by every pod that may talk to MLflow (jobs, test pods, the predictor's storage initializer).
The MLflow NetworkPolicy admits exactly these pods.
*/}}
{{- define "housing-mlops.mlflowClientLabel" -}}
housing-mlops.io/mlflow-client: "true"
{{- end -}}

{{/*
Image reference: [global.image.registry/]<repository>:<tag>, or [registry/]<repository>@<digest> when the image
sets `digest` (the digest wins: a tag can be moved, a digest cannot). The tag defaults to global.image.tag,
then the chart appVersion (every subchart carries the umbrella's appVersion).
Usage: include "housing-mlops.image" (dict "context" $ "image" .Values.image)
*/}}
{{- define "housing-mlops.image" -}}
{{- $registry := .image.registry | default .context.Values.global.image.registry -}}
{{- $repository := ternary (printf "%s/%s" (trimSuffix "/" $registry) .image.repository) .image.repository (ne $registry "") -}}
{{- with .image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .) -}}
{{- fail (printf "image %s: digest %q is not sha256:<64 hex digits>" $repository .) -}}
{{- end -}}
{{- printf "%s@%s" $repository . -}}
{{- else -}}
{{- printf "%s:%s" $repository (.image.tag | default .context.Values.global.image.tag | default .context.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "housing-mlops.imagePullPolicy" -}}
{{- .image.pullPolicy | default .context.Values.global.image.pullPolicy -}}
{{- end -}}

{{- define "housing-mlops.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Cluster-internal DNS name of a component's Service: <release>-<component>.<ns>.svc.<clusterDomain> */}}
{{- define "housing-mlops.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "housing-mlops.fullname" .) .context.Release.Namespace .context.Values.global.clusterDomain -}}
{{- end -}}

{{/* MLflow tracking URI: global.mlflow.url (external MLflow) or the in-chart service. */}}
{{- define "housing-mlops.mlflow.url" -}}
{{- if .Values.global.mlflow.url -}}
{{- tpl .Values.global.mlflow.url . -}}
{{- else -}}
{{- printf "http://%s:%d" (include "housing-mlops.serviceHost" (dict "context" . "component" "mlflow")) (int .Values.global.mlflow.port) -}}
{{- end -}}
{{- end -}}

{{/* PostgreSQL host: global.database.host (external) or the in-chart service. */}}
{{- define "housing-mlops.database.host" -}}
{{- .Values.global.database.host | default (include "housing-mlops.fullname" (dict "context" . "component" "postgresql")) -}}
{{- end -}}

{{/* Secret holding the database password: existingSecret or the one the postgresql subchart generates. */}}
{{- define "housing-mlops.database.secretName" -}}
{{- .Values.global.database.existingSecret | default (include "housing-mlops.fullname" (dict "context" . "component" "postgresql")) -}}
{{- end -}}

{{/*
SQLAlchemy URI of the backend store, without a password: libpq reads it from PGPASSWORD, which comes from
the Secret, so no password is ever in args, env literals or ConfigMaps.
*/}}
{{- define "housing-mlops.database.uri" -}}
{{- $db := .Values.global.database -}}
{{- printf "postgresql+psycopg2://%s@%s:%d/%s?sslmode=%s" $db.user (include "housing-mlops.database.host" .) (int $db.port) $db.name $db.sslMode -}}
{{- end -}}

{{- define "housing-mlops.database.passwordEnv" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "housing-mlops.database.secretName" . }}
      key: {{ .Values.global.database.passwordKey }}
{{- end -}}

{{/* Custom S3 endpoint (tpl'd, so `http://minio.{{ .Release.Namespace }}:9000` works); empty: AWS. */}}
{{- define "housing-mlops.s3.endpoint" -}}
{{- tpl .Values.global.s3.endpoint . -}}
{{- end -}}

{{/* s3://<bucket>/<prefix> where MLflow stores artifacts (and so where KServe loads models from). */}}
{{- define "housing-mlops.s3.artifactRoot" -}}
{{- $s3 := .Values.global.s3 -}}
{{- if $s3.prefix -}}
{{- printf "s3://%s/%s" $s3.bucket (trimAll "/" $s3.prefix) -}}
{{- else -}}
{{- printf "s3://%s" $s3.bucket -}}
{{- end -}}
{{- end -}}

{{/*
S3 environment for anything that reads or writes artifacts: region, custom endpoint, and credentials from
global.s3.existingSecret (none when IRSA / workload identity provides them).
*/}}
{{- define "housing-mlops.s3.env" -}}
{{- $s3 := .Values.global.s3 -}}
- name: AWS_DEFAULT_REGION
  value: {{ $s3.region | quote }}
{{- with (include "housing-mlops.s3.endpoint" .) }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ . | quote }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if $s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* MLflow client environment: tracking URI and, when MLflow has basic-auth, the credentials Secret. */}}
{{- define "housing-mlops.mlflow.clientEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "housing-mlops.mlflow.url" . | quote }}
{{- with .Values.global.mlflow.client }}
- name: MLFLOW_HTTP_REQUEST_MAX_RETRIES
  value: {{ .maxRetries | quote }}
- name: MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR
  value: {{ include "housing-mlops.num" .backoffFactor }}
{{- end }}
{{- with .Values.global.mlflow.auth.existingSecret }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.global.mlflow.auth.usernameKey }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.global.mlflow.auth.passwordKey }}
{{- end }}
{{- end -}}

{{/* Registered model name, for the commands that take --model-name. */}}
{{- define "housing-mlops.modelEnv" -}}
- name: HOUSING_MODEL_NAME
  value: {{ .Values.global.model.name | quote }}
{{- end -}}

{{/* Hardened container security context (values may add to it, e.g. runAsUser). */}}
{{- define "housing-mlops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Pod security context: non-root with the given uid/gid, seccomp RuntimeDefault.
Usage: include "housing-mlops.podSecurityContext" .Values.podSecurityContext
*/}}
{{- define "housing-mlops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Writable scratch space for read-only root filesystems. */}}
{{- define "housing-mlops.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.global.tmpSizeLimit }}
{{- end -}}

{{- define "housing-mlops.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The InferenceService the promotion/rollback hooks roll out (empty: none). */}}
{{- define "housing-mlops.isvcName" -}}
{{- .Values.global.inferenceService.name -}}
{{- end -}}

{{/* Environment of `housing-mlops promote`: alias and quality gate (global.gate). */}}
{{- define "housing-mlops.promotion.gateEnv" -}}
{{- $g := .Values.global.gate -}}
{{ include "housing-mlops.modelEnv" . }}
- name: HOUSING_ALIAS
  value: {{ .Values.global.model.alias | quote }}
- name: HOUSING_GATE_METRIC
  value: {{ $g.metric | quote }}
- name: HOUSING_GATE_DIRECTION
  value: {{ $g.direction | quote }}
- name: HOUSING_GATE_MAX_REGRESSION_PCT
  value: {{ include "housing-mlops.num" $g.maxRegressionPct }}
{{- if not (kindIs "invalid" $g.threshold) }}
- name: HOUSING_GATE_THRESHOLD
  value: {{ include "housing-mlops.num" $g.threshold }}
{{- end }}
{{- end -}}

{{/* A number as a plain string for env values: 1000000 -> "1000000" (not "1e+06"), 0.2 -> "0.2". */}}
{{- define "housing-mlops.num" -}}
{{- if eq (float64 (int64 .)) (float64 .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/*
A generated secret value that survives upgrades: the base64 value already stored in the cluster under
<name>/<key> (lookup), else 32 fresh random characters. Returns the base64 form for `data:`.
Usage: include "housing-mlops.keptSecretValue" (dict "context" $ "name" "x" "key" "password")
*/}}
{{- define "housing-mlops.keptSecretValue" -}}
{{- $value := randAlphaNum 32 | b64enc -}}
{{- with (lookup "v1" "Secret" .context.Release.Namespace .name) -}}
{{- with (index (.data | default dict) $.key) -}}
{{- $value = . -}}
{{- end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/*
NetworkPolicy policyTypes and egress rules of a component's pods. Egress is restricted only with
global.networkPolicy.egress.enabled; then the pods reach DNS and each destination named in .to (in order):
  mlflow      the in-chart MLflow pods (or global.networkPolicy.egress.mlflow for an external one)
  postgresql  the in-chart PostgreSQL pods (or global.networkPolicy.egress.database for an external one)
  s3          global.networkPolicy.egress.s3
  apiServer   global.networkPolicy.egress.apiServer
  predictor   this release's predictor pods (REST 8080, gRPC 9000)
plus global.networkPolicy.egress.extra. An empty .to leaves DNS off as well: nothing leaves the pod.
Usage: include "housing-mlops.networkPolicyEgress" (dict "context" $ "to" (list "mlflow" "s3"))
*/}}
{{- define "housing-mlops.networkPolicyEgress" -}}
{{- $g := .context.Values.global -}}
{{- $e := $g.networkPolicy.egress -}}
{{- if not $e.enabled }}
policyTypes: ["Ingress"]
{{- else }}
policyTypes: ["Ingress", "Egress"]
egress:
  {{- if .to }}
  - to:
      {{- toYaml $e.dns.to | nindent 6 }}
    ports:
      {{- toYaml $e.dns.ports | nindent 6 }}
  {{- end }}
  {{- range .to }}
  {{- if eq . "mlflow" }}
  {{- if not $g.mlflow.url }}
  - to:
      - podSelector:
          matchLabels:
            {{- include "housing-mlops.selectorLabels" (dict "context" $.context "component" "mlflow") | nindent 12 }}
    ports:
      - {port: {{ $g.mlflow.port }}, protocol: TCP}
  {{- else if $e.mlflow }}
  - to:
      {{- toYaml $e.mlflow | nindent 6 }}
  {{- end }}
  {{- else if eq . "postgresql" }}
  {{- if not $g.database.host }}
  - to:
      - podSelector:
          matchLabels:
            {{- include "housing-mlops.selectorLabels" (dict "context" $.context "component" "postgresql") | nindent 12 }}
    ports:
      - {port: 5432, protocol: TCP}
  {{- else if $e.database }}
  - to:
      {{- toYaml $e.database | nindent 6 }}
    ports:
      - {port: {{ $g.database.port }}, protocol: TCP}
  {{- end }}
  {{- else if eq . "s3" }}
  - to:
      {{- toYaml $e.s3.to | nindent 6 }}
    ports:
      {{- toYaml $e.s3.ports | nindent 6 }}
  {{- else if eq . "apiServer" }}
  - to:
      {{- toYaml $e.apiServer.to | nindent 6 }}
    ports:
      {{- toYaml $e.apiServer.ports | nindent 6 }}
  {{- else if eq . "predictor" }}
  - to:
      - podSelector:
          matchLabels:
            serving.kserve.io/inferenceservice: {{ $g.inferenceService.name | default "housing-model" }}
    ports:
      - {port: 8080, protocol: TCP}
      - {port: 9000, protocol: TCP}
  {{- else }}
  {{- fail (printf "housing-mlops.networkPolicyEgress: unknown destination %q" .) }}
  {{- end }}
  {{- end }}
  {{- with $e.extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if and (not .to) (not $e.extra) }} []{{ end }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy of pods that serve nothing (the Jobs, CronJobs and test pods of a component): no ingress at all,
egress as housing-mlops.networkPolicyEgress.
Usage: include "housing-mlops.jobNetworkPolicy" (dict "context" $ "component" "training" "to" (list ...))
*/}}
{{- define "housing-mlops.jobNetworkPolicy" -}}
{{- if .context.Values.global.networkPolicy.enabled }}
# {{ .component }} pods serve nothing: no ingress{{ if .context.Values.global.networkPolicy.egress.enabled }}; egress to DNS and {{ join ", " .to }}{{ end }}.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "housing-mlops.fullname" (dict "context" .context "component" .component) }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "housing-mlops.labels" (dict "context" .context "component" .component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "housing-mlops.selectorLabels" (dict "context" .context "component" .component) | nindent 6 }}
  {{- include "housing-mlops.networkPolicyEgress" . | trim | nindent 2 }}
  ingress: []
{{- end }}
{{- end -}}

{{/*
Policy-scanner exceptions of one object, each with its reason, as annotations: `checkov.io/skipN: ID=reason`
for checkov, `kube-score/ignore: ids` for kube-score with one `kube-score.housing-mlops.io/<id>: reason` each.
tests/chart/test_scanners.py runs both scanners on the rendered environments and fails on any finding that is
neither fixed nor listed here with a reason. The conditional ones are rendered only where they apply:
  cpuLimit       .resources has no CPU limit        digest      .image has no digest
  pullPolicy     .pullPolicy is not Always          networkPolicy  global.networkPolicy.enabled is off
  egressOpen     policies on, egress not restricted
The others are named in .skips: secretEnv apiToken ephemeral postgresUid testProbes replicas serviceName
externalPods.
Usage: include "housing-mlops.scanSkips" (dict "context" $ "image" .Values.image "resources" .Values.resources
  "pullPolicy" "IfNotPresent" "skips" (list "ephemeral"))
*/}}
{{- define "housing-mlops.scanSkips" -}}
{{- $g := .context.Values.global -}}
{{- $catalog := dict
  "cpuLimit" (list "CKV_K8S_11" "container-resources" "no CPU limit by default: a CFS quota throttles bursts (training, serving, migrations) even while the node has idle CPU; the CPU request reserves the share and a memory limit bounds every container (resources.limits.cpu adds one)")
  "digest" (list "CKV_K8S_43" "" "pinned by tag in this environment: set <component>.image.digest to pin by digest (values/prod.yaml does; ci/publish.sh writes the digests it pushed)")
  "pullPolicy" (list "CKV_K8S_15" "container-image-pull-policy" "IfNotPresent: release tags are never moved and digests cannot be, so Always would only add a registry round trip to every hook and CronJob pod and fail them while the registry is down")
  "networkPolicy" (list "CKV2_K8S_6" "pod-networkpolicy" "NetworkPolicies are off in this environment (global.networkPolicy.enabled is false); values/prod.yaml renders one for every pod")
  "egressOpen" (list "" "pod-networkpolicy" "ingress is restricted but egress is open in this environment (global.networkPolicy.egress.enabled is false); values/prod.yaml restricts egress too")
  "secretEnv" (list "CKV_K8S_35" "" "MLflow, boto3 (DVC, artifacts) and libpq read these credentials from environment variables; each comes from a secretKeyRef, never a literal (tests/chart/test_security.py)")
  "apiToken" (list "CKV_K8S_38" "" "this pod calls the Kubernetes API (it reads the training Job, Helm's record of its revision, the InferenceService; the reconciler patches the InferenceService) with a Role limited to that")
  "ephemeral" (list "" "container-ephemeral-storage-request-and-limit" "the root filesystem is read-only and every writable volume is a sized emptyDir (global.tmpSizeLimit), so the container cannot grow ephemeral storage past them")
  "postgresUid" (list "CKV_K8S_40" "container-security-context-user-group-id" "uid/gid 70 is the postgres user of the Alpine image, the owner of its data directory; the pod runs non-root with a read-only root filesystem")
  "testProbes" (list "CKV_K8S_8,CKV_K8S_9" "" "a helm test pod sends its requests and exits: there is nothing to probe")
  "replicas" (list "" "deployment-replicas" "one replica in this environment (<component>.replicas); values/prod.yaml runs two with a PodDisruptionBudget")
  "serviceName" (list "" "statefulset-has-servicename" "serviceName is the ClusterIP Service the clients use: one database pod needs no per-pod DNS, and serviceName is immutable, so a headless Service would break upgrades from 0.1.0")
  "externalPods" (list "" "networkpolicy-targets-pod" "selects the predictor pods KServe creates for the InferenceService (label serving.kserve.io/inferenceservice), which are not in the chart")
-}}
{{- $names := list -}}
{{- if and (hasKey . "resources") (not (dig "limits" "cpu" "" (.resources | default dict))) }}{{ $names = append $names "cpuLimit" }}{{ end -}}
{{- if and (hasKey . "image") (not .image.digest) }}{{ $names = append $names "digest" }}{{ end -}}
{{- if and (hasKey . "pullPolicy") (ne .pullPolicy "Always") }}{{ $names = append $names "pullPolicy" }}{{ end -}}
{{- if and (hasKey . "pod") (not $g.networkPolicy.enabled) }}{{ $names = append $names "networkPolicy" }}
{{- else if and (hasKey . "pod") (not $g.networkPolicy.egress.enabled) }}{{ $names = append $names "egressOpen" }}{{ end -}}
{{- $names = concat $names (.skips | default list) -}}
{{- $n := 0 -}}
{{- $ks := list -}}
{{- range $names }}
{{- $entry := get $catalog . | required (printf "housing-mlops.scanSkips: unknown skip %q" .) }}
{{- range $id := splitList "," (index $entry 0) }}{{ if $id }}{{ $n = add1 $n }}
checkov.io/skip{{ $n }}: {{ printf "%s=%s" $id (index $entry 2) | quote }}
{{- end }}{{ end }}
{{- with index $entry 1 }}{{ $ks = append $ks . }}
kube-score.housing-mlops.io/{{ . }}: {{ index $entry 2 | quote }}
{{- end }}
{{- end }}
{{- with $ks }}
kube-score/ignore: {{ join "," . | quote }}
{{- end }}
{{- end -}}
