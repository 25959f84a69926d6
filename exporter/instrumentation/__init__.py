"""Provider SDK instrumentors: codes reach Codebook without application changes.

One module per provider, each an OpenTelemetry ``BaseInstrumentor`` registered in the
``opentelemetry_instrumentor`` entry-point group (so ``opentelemetry-instrument`` activates it
when the provider's SDK is installed, and skips it when it is not):

- :mod:`exporter.instrumentation.vonage` (``codebook_vonage``): ``vonage.sms``;
- :mod:`exporter.instrumentation.azure_communication` (``codebook_azure_communication``):
  ``azure.acs.call_automation``, ``azure.acs.chat``, ``azure.acs.sms_send``;
- :mod:`exporter.instrumentation.braze` (``codebook_braze``): ``braze.rest``.

Importing this package imports no provider SDK. The core of ``exporter`` never imports it.
"""
