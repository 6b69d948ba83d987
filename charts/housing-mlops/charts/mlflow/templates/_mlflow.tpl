{{/*
Host headers MLflow accepts (`--allowed-hosts`): its Service name in every DNS form, with and without the
port, localhost for port-forwarding, the ingress host and `extraAllowedHosts`.
*/}}
{{- define "housing-mlops.mlflow.allowedHosts" -}}
{{- $svc := include "housing-mlops.fullname" (dict "context" . "component" "mlflow") -}}
{{- $ns := .Release.Namespace -}}
{{- $port := int .Values.global.mlflow.port -}}
{{- $hosts := list -}}
{{- range (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.global.clusterDomain)) -}}
{{- $hosts = append $hosts . -}}
{{- $hosts = append $hosts (printf "%s:%d" . $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") -}}
{{- if and .Values.ingress.enabled .Values.ingress.host -}}
{{- $hosts = append $hosts .Values.ingress.host -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.extraAllowedHosts -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}
