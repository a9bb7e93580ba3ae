// Glue between the figures garden computed (JSON in #garden-data) and
// Apache ECharts: it lays out what Rust computed and computes nothing of
// its own. Text from the data goes in through textContent only.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('garden-data').textContent);
  var charts = {};
  var expected = {};
  var styles = {
    best: { width: 2.5, type: 'solid' },
    variant: { width: 1.2, type: 'solid' },
    control: { width: 1.5, type: 'dotted' },
    portfolio: { width: 2, type: 'solid', color: '#8250df' },
    'buy-and-hold': { width: 1.5, type: 'dashed', color: '#7a8494' }
  };

  function num(x, digits) {
    return x === null || x === undefined ? '–' : Number(x).toFixed(digits);
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function empty(id, why) {
    var el = byId(id);
    el.classList.add('empty');
    el.textContent = why;
  }

  function chart(id, option) {
    var c = echarts.init(byId(id), null, { renderer: 'canvas' });
    c.setOption(option);
    charts[id] = c;
    expected[id] = option.series.length;
    return c;
  }

  function fillTable(id, rows) {
    var body = byId(id).querySelector('tbody');
    body.textContent = '';
    rows.forEach(function (cells) {
      var tr = document.createElement('tr');
      cells.forEach(function (cell) {
        var td = document.createElement('td');
        td.textContent = cell;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function header() {
    var m = data.meta;
    byId('run').textContent = m.run;
    byId('meta').textContent = m.data + ' · seed ' + m.seed + ' · started ' + m.started_at +
      ' · ' + m.bars + ' bars · ' + m.variants + ' variants · ' + m.closed_plans + ' closed plans';
    m.warnings.forEach(function (w) {
      var li = document.createElement('li');
      li.textContent = w;
      byId('warnings').appendChild(li);
    });
  }

  function cutLine(cut) {
    if (cut === null) return undefined;
    return {
      symbol: 'none', silent: true,
      lineStyle: { type: 'dashed', color: '#a4330d' },
      label: { formatter: 'out of sample →', position: 'insideEndTop' },
      data: [{ xAxis: cut }]
    };
  }

  function lines(id, figure, unit) {
    if (figure.series.length === 0) {
      empty(id, 'No account values were recorded for this run.');
      return;
    }
    var series = figure.series.map(function (s, i) {
      var st = styles[s.kind] || styles.variant;
      return {
        name: s.name, type: 'line', showSymbol: false, sampling: 'lttb',
        data: s.points,
        lineStyle: { width: st.width, type: st.type, color: st.color },
        itemStyle: st.color ? { color: st.color } : undefined,
        markLine: i === 0 ? cutLine(figure.cut) : undefined
      };
    });
    chart(id, {
      animation: false,
      tooltip: { trigger: 'axis' },
      legend: { type: 'scroll', top: 0 },
      grid: { left: 70, right: 24, top: 36, bottom: 60 },
      xAxis: { type: 'time' },
      yAxis: { type: 'value', scale: true, axisLabel: { formatter: '{value}' + unit } },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 18, bottom: 8 }],
      series: series
    });
  }

  function tradeMarks(variant) {
    var fills = data.trades.fills[variant] || [];
    var entries = fills.filter(function (f) { return f.kind === 'entry'; });
    var exits = fills.filter(function (f) { return f.kind !== 'entry'; });
    return [
      entries.map(function (f) {
        return { value: [f.time, f.price], symbolRotate: f.side === 'long' ? 0 : 180, name: f.plan };
      }),
      exits.map(function (f) {
        return {
          value: [f.time, f.price], name: f.plan + ' ' + f.kind,
          itemStyle: { color: f.kind === 'target' ? '#1a7f37' : f.kind === 'stop' ? '#cf222e' : '#7a8494' }
        };
      })
    ];
  }

  function trades() {
    var t = data.trades;
    if (t.candles.length === 0) {
      empty('trades', 'No bars were recorded for this run.');
      return;
    }
    byId('symbol').textContent = t.symbol;
    byId('per-candle').textContent = t.bars_per_candle === 1 ? 'one bar per candle' : t.bars_per_candle + ' bars per candle';
    var select = byId('variant');
    Object.keys(t.fills).forEach(function (v) {
      var o = document.createElement('option');
      o.value = v;
      o.textContent = v;
      select.appendChild(o);
    });
    if (t.chosen) select.value = t.chosen;
    var marks = tradeMarks(select.value);
    var c = chart('trades', {
      animation: false,
      tooltip: { trigger: 'item' },
      legend: { top: 0 },
      grid: { left: 70, right: 24, top: 36, bottom: 60 },
      xAxis: { type: 'time' },
      yAxis: { type: 'value', scale: true },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 18, bottom: 8 }],
      series: [
        { name: 'price', type: 'candlestick', data: t.candles.map(function (k) { return [k[0], k[1], k[2], k[3], k[4]]; }) },
        { name: 'entries', id: 'entries', type: 'scatter', symbol: 'triangle', symbolSize: 11, itemStyle: { color: '#0969da' }, data: marks[0] },
        { name: 'exits', id: 'exits', type: 'scatter', symbol: 'circle', symbolSize: 8, data: marks[1] }
      ]
    });
    select.addEventListener('change', function () {
      var m = tradeMarks(select.value);
      c.setOption({ series: [{ id: 'entries', data: m[0] }, { id: 'exits', data: m[1] }] });
    });
  }

  function showNode(id) {
    var n = data.lineage.nodes[id];
    if (!n) return;
    byId('node-title').textContent = id + (n.control ? ' (control)' : '');
    byId('node-meta').textContent = 'generation ' + n.generation + ' · born: ' + n.birth +
      (n.death ? ' · died: ' + n.death : ' · alive') +
      ' · in sample ' + num(n.in_sample, 3) + ' · out of sample ' + num(n.out_of_sample, 3);
    fillTable('genes', n.genes.map(function (g) { return [g[0], num(g[1], 4)]; }));
    var option = {
      animation: false,
      grid: { left: 46, right: 10, top: 10, bottom: 24 },
      tooltip: { trigger: 'axis' },
      xAxis: { type: 'value', name: 'bar', scale: true },
      yAxis: { type: 'value', scale: true },
      series: [{ name: 'fitness', type: 'line', data: n.fitness }]
    };
    if (charts['node-fitness']) {
      charts['node-fitness'].setOption(option);
    } else {
      chart('node-fitness', option);
    }
  }

  function lineage() {
    var tree = data.lineage.tree;
    if (!tree) {
      empty('lineage', 'This run has no lineage (evolution was off).');
      return;
    }
    var c = chart('lineage', {
      animation: false,
      tooltip: { trigger: 'item', formatter: function (p) { return p.name + ': ' + num(p.value, 3); } },
      series: [{
        type: 'tree', data: [tree], orient: 'LR', top: 20, bottom: 20, left: 90, right: 120,
        symbolSize: 12, initialTreeDepth: -1, expandAndCollapse: false,
        label: { position: 'top', fontSize: 11 }
      }]
    });
    c.on('click', function (p) { showNode(p.name); });
  }

  function generations() {
    var g = data.generations;
    if (g.length === 0) {
      empty('generations', 'This run has no lineage (evolution was off).');
      return;
    }
    var all = [];
    g.forEach(function (x) { x.values.forEach(function (v) { all.push([x.generation, v]); }); });
    chart('generations', {
      animation: false,
      tooltip: { trigger: 'item' },
      legend: { top: 0 },
      grid: { left: 60, right: 24, top: 36, bottom: 40 },
      xAxis: { type: 'value', name: 'generation', minInterval: 1 },
      yAxis: { type: 'value', name: 'fitness', scale: true },
      series: [
        { name: 'variants', type: 'scatter', symbolSize: 5, data: all, itemStyle: { opacity: 0.45 } },
        { name: 'best', type: 'line', data: g.map(function (x) { return [x.generation, x.best]; }) },
        { name: 'median', type: 'line', data: g.map(function (x) { return [x.generation, x.median]; }) }
      ]
    });
  }

  function calibration() {
    var cal = data.calibration;
    byId('brier').textContent = 'Brier score: fused ' + num(cal.fused_brier, 4) + ', the alphas alone ' + num(cal.alpha_brier, 4) + '.';
    if (cal.fused.length === 0) {
      empty('calibration', 'No plan reached a realised result.');
    } else {
      var points = function (bins) {
        return bins.map(function (b) { return { value: [b.predicted, b.observed, b.count] }; });
      };
      var size = function (v) { return 5 + Math.sqrt(v[2]); };
      chart('calibration', {
        animation: false,
        tooltip: { trigger: 'item', formatter: function (p) { return p.seriesName + ': p ' + num(p.value[0], 2) + ', won ' + num(p.value[1], 2) + ' of ' + p.value[2]; } },
        legend: { top: 0 },
        grid: { left: 60, right: 24, top: 36, bottom: 40 },
        xAxis: { type: 'value', name: 'predicted', min: 0, max: 1 },
        yAxis: { type: 'value', name: 'won', min: 0, max: 1 },
        series: [
          { name: 'perfect', type: 'line', data: [[0, 0], [1, 1]], showSymbol: false, lineStyle: { type: 'dashed', color: '#7a8494' }, silent: true },
          { name: 'fused', type: 'line', data: points(cal.fused), symbolSize: size },
          { name: 'alpha alone', type: 'line', data: points(cal.alpha), symbolSize: size }
        ]
      });
    }
    fillTable('experts', data.experts.map(function (e) {
      return [e.expert, String(e.opinions), String(e.judged), num(e.hit_rate, 3), num(e.brier, 4), num(e.mean_abs_llr, 3)];
    }));
  }

  function costs() {
    var rows = data.costs;
    if (rows.length === 0) {
      empty('costs', 'The run recorded no summary (it may still be running).');
    } else {
      chart('costs', {
        animation: false,
        tooltip: { trigger: 'axis' },
        legend: { top: 0 },
        grid: { left: 60, right: 60, top: 36, bottom: 60 },
        xAxis: { type: 'category', data: rows.map(function (r) { return r.module; }), axisLabel: { rotate: 20 } },
        yAxis: [{ type: 'value', name: 'µs' }, { type: 'value', name: 'k fuel' }],
        series: [
          { name: 'µs per message', type: 'bar', data: rows.map(function (r) { return r.micros_per_message; }) },
          { name: 'k fuel per message', type: 'bar', yAxisIndex: 1, data: rows.map(function (r) { return r.fuel_per_message / 1000; }) }
        ]
      });
    }
    fillTable('cost-table', rows.map(function (r) {
      return [r.module, String(r.instances), String(r.calls), num(r.micros_per_message, 2), num(r.fuel_per_message, 0)];
    }));
  }

  header();
  lines('equity', data.equity, '');
  lines('drawdown', data.drawdown, ' %');
  trades();
  lineage();
  generations();
  calibration();
  costs();
  window.addEventListener('resize', function () {
    Object.keys(charts).forEach(function (k) { charts[k].resize(); });
  });
  // For tests and the curious: the charts and how many series each should have.
  window.garden = { charts: charts, expected: expected, data: data };
})();
