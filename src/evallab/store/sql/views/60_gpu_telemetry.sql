-- GPU telemetry samples labelled with the run they belong to. A LEFT JOIN on the runs primary
-- key lets PostgreSQL drop the join when a query reads only telemetry columns (time-range
-- panels over many samples).
CREATE OR REPLACE VIEW v_gpu_telemetry AS
SELECT t.ts AS time,
       t.run_id,
       r.model_name,
       r.quant,
       r.runtime_label,
       r.benchmark,
       r.gpu_name,
       r.status,
       t.gpu_index,
       t.temperature_c,
       t.power_w,
       t.sm_clock_mhz,
       t.mem_clock_mhz,
       t.memory_used_mb,
       t.utilization_pct,
       t.throttle_reasons,
       t.other_processes
  FROM telemetry t
  LEFT JOIN runs r ON r.run_id = t.run_id;
