//! {{name}}: a garden module. It counts bars and, every `every` of them,
//! sends the close on `{{name}}-count`.

use garden_sdk::{Body, Envelope, Gene, Info, InitContext, Module, Outbox, Subscription};

/// One variant's state.
pub struct {{class}} {
    every: i64,
    seen: i64,
}

impl Module for {{class}} {
    fn describe() -> Info {
        Info::new("{{name}}", "0.1.0", "example")
            .subscribe(Subscription::broadcast("bar"))
            .publishes("{{name}}-count")
            .gene(Gene::int("every", 1.0, 1000.0, 100.0, 10.0))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        Ok({{class}} {
            every: ctx.int("every")?,
            seen: 0,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        if let Body::Bar(bar) = &msg.body {
            self.seen += 1;
            if self.seen % self.every.max(1) == 0 {
                out.publish("{{name}}-count", &bar.symbol, Body::Bar(bar.clone()));
            }
        }
        Ok(())
    }
}

garden_sdk::export_module!({{class}});

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{Bar, GeneValue, Param};

    #[test]
    fn sends_every_nth_bar() {
        let mut m = {{class}}::init(InitContext {
            member: 0,
            instance: "t".into(),
            params: vec![Param { name: "every".into(), value: GeneValue::Int(2) }],
            settings: vec![],
            snapshot: None,
        })
        .expect("init");
        let mut sent = 0;
        for i in 0..10 {
            let mut out = Outbox::new();
            let bar = Bar { symbol: "X".into(), time: i, open: 1.0, high: 1.0, low: 1.0, close: 1.0, volume: 1.0 };
            let msg = Envelope { topic: "bar".into(), key: "X".into(), seq: 0, time: i, source: "feed".into(), body: Body::Bar(bar) };
            m.on_message(&msg, &mut out).expect("handles");
            sent += out.messages().len();
        }
        assert_eq!(sent, 5);
    }
}
