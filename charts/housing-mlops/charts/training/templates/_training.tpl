{{/*
The training pod (train, then the bootstrap promotion while the alias does not exist). Its hash names the Job.
"scheduled": the retrain CronJob's pod instead: always trains (a new version, its trigger the pod's name),
then promotes it through the gate and rolls the predictor, as the promotion ServiceAccount.
Usage: include "housing-mlops.training.pod" (dict "context" $ "identity" ID "image" IMG "pullPolicy" P "bootstrap" B
  ["scheduled" true])
*/}}
{{- define "housing-mlops.training.pod" -}}
{{- $ctx := .context -}}
{{- $identity := .identity -}}
{{- $bootstrap := .bootstrap -}}
{{- $image := .image -}}
{{- $pullPolicy := .pullPolicy -}}
{{- $scheduled := .scheduled | default false -}}
{{- with $ctx -}}
{{- $p := .Values.params -}}
metadata:
  labels:
    {{- include "housing-mlops.labels" (dict "context" $ctx "component" "training") | nindent 4 }}
    {{- include "housing-mlops.mlflowClientLabel" . | nindent 4 }}
spec:
  restartPolicy: Never
  {{- if $scheduled }}
  # its own ServiceAccount (cloud role annotations); no Kubernetes API: the reconciler pins what the alias says
  serviceAccountName: {{ include "housing-mlops.fullname" (dict "context" $ctx "component" "retrain") }}
  {{- else }}
  serviceAccountName: {{ include "housing-mlops.fullname" (dict "context" $ctx "component" "training") }}
  {{- end }}
  automountServiceAccountToken: false
  {{- with (include "housing-mlops.imagePullSecrets" .) }}{{ . | nindent 2 }}{{- end }}
  securityContext:
    {{- include "housing-mlops.podSecurityContext" .Values.podSecurityContext | nindent 4 }}
  {{- if or $bootstrap $scheduled }}
  initContainers:
  {{- else }}
  containers:
  {{- end }}
    - name: train
      image: {{ $image }}
      imagePullPolicy: {{ $pullPolicy }}
      command: ["housing-mlops"]
      args: ["train"]
      env:
        {{- include "housing-mlops.mlflow.clientEnv" . | nindent 8 }}
        {{- include "housing-mlops.modelEnv" . | nindent 8 }}
        {{- include "housing-mlops.s3.env" . | nindent 8 }}
        {{- if $scheduled }}
        - name: HOUSING_TRIGGER # unique per run: the promote container finds this run's version by it
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- else }}
        # no revision in the pod template: an upgrade that changes nothing the model depends on renders it
        # unchanged (and Helm leaves the Job alone)
        - name: HOUSING_TRIGGER
          value: {{ printf "helm:%s/%s" .Release.Namespace .Release.Name | quote }}
        - name: HOUSING_IDENTITY
          value: {{ $identity | quote }}
        {{- end }}
        - name: HOUSING_EXPERIMENT
          value: {{ .Values.experiment | quote }}
        - name: HOUSING_DVC_REPO
          value: {{ .Values.data.repo | quote }}
        - name: HOUSING_DATA
          value: {{ .Values.data.path | quote }}
        {{- with .Values.data.remoteUrl }}
        - name: HOUSING_DVC_REMOTE_URL
          value: {{ . | quote }}
        {{- end }}
        {{- if and $scheduled (eq .Values.schedule.dataVersion "latest") }}
        - name: HOUSING_DATA_MD5
          value: latest
        {{- else if .Values.data.md5 }}
        - name: HOUSING_DATA_MD5
          value: {{ .Values.data.md5 | quote }}
        {{- end }}
        {{- with .Values.code.gitUrl }}
        - name: HOUSING_GIT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.code.gitRev }}
        - name: HOUSING_GIT_REV
          value: {{ . | quote }}
        {{- end }}
        - name: HOUSING_TEST_SIZE
          value: {{ include "housing-mlops.num" $p.testSize }}
        - name: HOUSING_RANDOM_STATE
          value: {{ include "housing-mlops.num" $p.randomState }}
        {{- if not (kindIs "invalid" $p.maxIter) }}
        - name: HOUSING_MAX_ITER
          value: {{ include "housing-mlops.num" $p.maxIter }}
        {{- end }}
        {{- if not (kindIs "invalid" $p.learningRate) }}
        - name: HOUSING_LEARNING_RATE
          value: {{ include "housing-mlops.num" $p.learningRate }}
        {{- end }}
        {{- if not (kindIs "invalid" $p.maxDepth) }}
        - name: HOUSING_MAX_DEPTH
          value: {{ include "housing-mlops.num" $p.maxDepth }}
        {{- end }}
        - name: HOUSING_WAIT_TIMEOUT
          value: {{ include "housing-mlops.num" .Values.waitTimeout }}
        - name: HOME
          value: /tmp
        - name: XDG_CACHE_HOME
          value: /tmp/.cache
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- include "housing-mlops.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        {{- include "housing-mlops.tmpMount" . | nindent 8 }}
  {{- if $scheduled }}
  containers:
    - name: promote
      image: {{ $image }}
      imagePullPolicy: {{ $pullPolicy }}
      command: ["housing-mlops"]
      args: ["promote"]
      env:
        {{- include "housing-mlops.mlflow.clientEnv" . | nindent 8 }}
        {{- include "housing-mlops.s3.env" . | nindent 8 }}
        {{- include "housing-mlops.promotion.gateEnv" . | nindent 8 }}
        - name: HOUSING_TRIGGER
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: HOUSING_MOVED_BY # who moved the alias (lifecycle.moved_by): this retrain run
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: HOUSING_WAIT_TIMEOUT
          value: {{ include "housing-mlops.num" .Values.waitTimeout }}
        - name: HOME
          value: /tmp
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- include "housing-mlops.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        {{- include "housing-mlops.tmpMount" . | nindent 8 }}
  {{- else if $bootstrap }}
  containers:
    # While the alias does not exist (a first or retried install: decided at run time, not by the Helm verb),
    # promote the version just trained (same gate as the hook), so that an alias-mode InferenceService can
    # become Ready while `helm install --wait` waits on it. Otherwise it exits at once: the hook decides.
    - name: bootstrap-promote
      image: {{ $image }}
      imagePullPolicy: {{ $pullPolicy }}
      command: ["housing-mlops"]
      args: ["promote"]
      env:
        {{- include "housing-mlops.mlflow.clientEnv" . | nindent 8 }}
        {{- include "housing-mlops.s3.env" . | nindent 8 }}
        {{- include "housing-mlops.promotion.gateEnv" . | nindent 8 }}
        - name: HOUSING_IDENTITY
          value: {{ $identity | quote }}
        - name: HOUSING_BOOTSTRAP
          value: "true"
        - name: HOUSING_MOVED_BY
          value: {{ printf "helm-bootstrap:%s/%s" .Release.Namespace .Release.Name | quote }}
        - name: HOUSING_WAIT_TIMEOUT
          value: {{ include "housing-mlops.num" .Values.waitTimeout }}
        - name: HOME
          value: /tmp
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- include "housing-mlops.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        {{- include "housing-mlops.tmpMount" . | nindent 8 }}
  {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
<release>-train-<identity:10>-<pod template hash:5>, at most 63 characters.
*/}}
{{- define "housing-mlops.training.jobName" -}}
{{- $prefix := printf "%s-train" (.context.Release.Name | trunc 40 | trimSuffix "-") -}}
{{- printf "%s-%s-%s" $prefix (trunc 10 .identity) (.pod | sha256sum | trunc 5) -}}
{{- end -}}
