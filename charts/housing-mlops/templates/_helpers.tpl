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

{{/*
podFailurePolicy of the jobs: a verdict is final (exit 2: bad arguments; 3: the gate rejected; 4: the training
the hook waits for failed), a crash is retried up to backoffLimit, an eviction or preemption is not the job's
failure.
Usage: include "housing-mlops.podFailurePolicy" (dict "promote" (list 2 3)): container name -> final exit codes
*/}}
{{- define "housing-mlops.podFailurePolicy" -}}
podFailurePolicy:
  rules:
    {{- range $container, $codes := . }}
    - action: FailJob
      onExitCodes:
        containerName: {{ $container }}
        operator: In
        values: {{ toJson $codes }}
    {{- end }}
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
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

{{/*
The Helm revision's trigger string: training tags the model version with it (HOUSING_TRIGGER) and the
promotion hook promotes the version carrying it. `<release>-<revision>`.
*/}}
{{- define "housing-mlops.trigger" -}}
{{- printf "%s-%d" .Release.Name (int .Release.Revision) -}}
{{- end -}}

{{/*
What the promotion and rollback hooks need to know about the revision (lifecycle.py): the training identity
and Job it stands for (from the training ConfigMap that this revision's manifest applied before the hook ran;
absent when training is off) and the release/revision whose served version they record or restore.
*/}}
{{- define "housing-mlops.lifecycleEnv" -}}
- name: HOUSING_IDENTITY
  valueFrom:
    configMapKeyRef:
      name: {{ include "housing-mlops.fullname" (dict "context" . "component" "training") }}
      key: identity
      optional: true
- name: HOUSING_RELEASE
  value: {{ printf "%s/%s" .Release.Namespace .Release.Name | quote }}
- name: HOUSING_REVISION
  value: {{ .Release.Revision | quote }}
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
