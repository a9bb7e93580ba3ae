//! The log on stderr and, with `--otlp URL`, the same spans exported to an
//! OpenTelemetry collector over OTLP/HTTP (protobuf).
//!
//! Invariants: the log's level is `GARDEN_LOG` (default `error`), the
//! export's `GARDEN_OTLP_LOG` (default `garden_host=info`: load and
//! instantiate; `garden_host=debug` adds handle, publish and selection),
//! each filtered on its own so a quiet log still exports; spans are sent in
//! batches by the SDK's own thread, never on the message path, and what is
//! still queued is flushed when the command ends ([`Telemetry::shutdown`]).
//! Without the `otlp` feature, `--otlp` is refused with how to get it.

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What a command's spans go to; keep it until the command ends.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Start the log, and the export to `otlp` if given (e.g.
    /// `http://127.0.0.1:4318/v1/traces`).
    pub fn init(otlp: Option<&str>) -> Result<Telemetry> {
        let log = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            // Spans (load, instantiate, handle, publish, selection) print
            // when they close, with their time.
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_filter(filter("GARDEN_LOG", "error"));
        #[cfg(feature = "otlp")]
        {
            let (provider, export) = match otlp {
                Some(url) => {
                    let (provider, layer) = export(url)?;
                    (Some(provider), Some(layer))
                }
                None => (None, None),
            };
            tracing_subscriber::registry().with(log).with(export).init();
            Ok(Telemetry { provider })
        }
        #[cfg(not(feature = "otlp"))]
        {
            if otlp.is_some() {
                anyhow::bail!(
                    "this garden was built without OpenTelemetry export: build it with `--features otlp` (on by default)"
                );
            }
            tracing_subscriber::registry().with(log).init();
            Ok(Telemetry {})
        }
    }

    /// Send what is still queued and stop the export.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: spans still queued for the OTLP collector were not sent: {e}");
        }
    }
}

/// The filter in `var`, or `default` when unset or unreadable.
fn filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

/// The tracer provider and the layer that feeds it.
#[cfg(feature = "otlp")]
fn export<S>(
    url: &str,
) -> Result<(
    opentelemetry_sdk::trace::SdkTracerProvider,
    impl Layer<S> + use<S>,
)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use anyhow::Context;
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::{Protocol, WithExportConfig};

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .with_context(|| format!("--otlp {url}: not an OTLP/HTTP endpoint"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("garden")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("garden"))
        .with_filter(filter("GARDEN_OTLP_LOG", "garden_host=info"));
    Ok((provider, layer))
}
