// SPDX-License-Identifier: GPL-3.0-or-later
// StableWrap batch for Flamenco 3: one Blender task per row of a pairs CSV.
//
// Install: copy this file into the Flamenco Manager's `scripts/` folder (next to the manager's
// executable) and restart the Manager; "StableWrap Batch" then appears as a job type. Every path
// below must be one the Workers can see (shared storage, or Flamenco's two-way variables).
//
// Each task runs, on a Worker:
//   {blender} {blenderArgs} <blendfile> --python <script> -- <pairs_csv> --row <N>
//       --report <output_dir>/pair-<N>_report.csv --save <output_dir>/pair-<N>.blend
//       --quality <quality> [--uvs] [--weights] [--addon-dir <addon_dir>]
// where <script> is StableWrap's scripts/batch_match_csv.py: it matches row N (1-based) of the
// CSV alone, writes its one-row report and the .blend with the results, and exits non-zero when
// the row failed, so Flamenco marks that task failed and the other rows go on.

const JOB_TYPE = {
    label: "StableWrap Batch",
    description: "Match every source/target pair of a CSV with StableWrap: one task per pair",
    settings: [
        { key: "pairs_csv", type: "string", subtype: "file_path", required: true,
          description: "The pairs CSV (header 'source,target'; object names in the blend file or mesh files relative to the CSV)" },
        { key: "rows", type: "int32", required: true, default: 1,
          description: "How many pairs (data rows) the CSV holds: one task each" },
        { key: "blendfile", type: "string", subtype: "file_path", required: true,
          description: "The .blend the pairs are matched in (an empty scene when they are all files)" },
        { key: "script", type: "string", subtype: "file_path", required: true,
          description: "StableWrap's scripts/batch_match_csv.py, where the Workers see it" },
        { key: "output_dir", type: "string", subtype: "dir_path", required: true,
          description: "Where each pair's .blend and report go (pair-<N>.blend, pair-<N>_report.csv)" },
        { key: "quality", type: "string", choices: ["fast", "balanced", "best"], default: "balanced",
          description: "StableWrap's speed / accuracy preset" },
        { key: "uvs", type: "bool", default: false, description: "Also transfer the source's UVs" },
        { key: "weights", type: "bool", default: false, description: "Also transfer the source's vertex groups" },
        { key: "addon_dir", type: "string", subtype: "dir_path", default: "", visible: "submission",
          description: "Load the extension from this source folder (empty: the Workers' installed extension)" },
    ],
};

function pairTaskArgs(settings, row) {
    const out = settings.output_dir.replace(/[\\/]+$/, "");
    let args = [
        "--python", settings.script, "--", settings.pairs_csv, "--row", String(row),
        "--report", `${out}/pair-${row}_report.csv`, "--save", `${out}/pair-${row}.blend`,
        "--quality", settings.quality || "balanced",
    ];
    if (settings.uvs) args.push("--uvs");
    if (settings.weights) args.push("--weights");
    if (settings.addon_dir) args.push("--addon-dir", settings.addon_dir);
    return args;
}

function compileJob(job) {
    const settings = job.settings;
    const rows = Number(settings.rows);
    if (!Number.isInteger(rows) || rows < 1) {
        throw `rows must be a whole number of pairs, at least 1 (got ${settings.rows})`;
    }
    for (let row = 1; row <= rows; row++) {
        const task = author.Task(`pair-${row}`, "blender");
        task.addCommand(author.Command("blender-render", {
            exe: "{blender}",
            exeArgs: "{blenderArgs}",
            argsBefore: [],
            blendfile: settings.blendfile,
            args: pairTaskArgs(settings, row),
        }));
        job.addTask(task);
    }
}
