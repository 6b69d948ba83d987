{{/*
A `helm test` Pod running one `housing-mlops` command; `helm test <release> --logs` prints its output.
Usage: include "housing-mlops.testPod" (dict "context" $ "name" "mlflow" "weight" 0 "args" (list "check") "env" <yaml>)
*/}}
{{- define "housing-mlops.testPod" -}}
{{- $ := .context -}}
{{- $t := $.Values.tests -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ printf "%s-test-%s" $.Release.Name .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "housing-mlops.labels" (dict "context" $ "component" "tests") | nindent 4 }}
    {{- include "housing-mlops.mlflowClientLabel" $ | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-weight: {{ .weight | quote }}
    # Helm 4 deletes a succeeded test pod only after `helm test --logs` has printed it; a failed one stays
    # for `kubectl logs` until the next `helm test` (or `kubectl delete pod -l app.kubernetes.io/component=tests`).
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- include "housing-mlops.scanSkips" (dict "context" $ "image" $t.image "resources" $t.resources "pullPolicy" (include "housing-mlops.imagePullPolicy" (dict "context" $ "image" $t.image)) "pod" true "skips" (list "secretEnv" "ephemeral" "testProbes")) | trim | nindent 4 }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "housing-mlops.fullname" (dict "context" $ "component" "tests") }}
  automountServiceAccountToken: false
  {{- with (include "housing-mlops.imagePullSecrets" $) }}{{ . | nindent 2 }}{{- end }}
  securityContext:
    {{- include "housing-mlops.podSecurityContext" $t.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .name }}
      image: {{ include "housing-mlops.image" (dict "context" $ "image" $t.image) }}
      imagePullPolicy: {{ include "housing-mlops.imagePullPolicy" (dict "context" $ "image" $t.image) }}
      command: ["housing-mlops"]
      args: {{ toJson .args }}
      env:
        {{- .env | nindent 8 }}
        - name: HOME
          value: /tmp
      resources:
        {{- toYaml $t.resources | nindent 8 }}
      securityContext:
        {{- include "housing-mlops.containerSecurityContext" $ | nindent 8 }}
      volumeMounts:
        {{- include "housing-mlops.tmpMount" $ | nindent 8 }}
  volumes:
    {{- include "housing-mlops.tmpVolume" $ | nindent 4 }}
{{- end -}}
