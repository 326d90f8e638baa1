"""Hand-written miniature releases for the ingest tests (a few rows per file, exact release formats).

Each builder writes a tiny valid release; tests then overwrite one file with a quirk or a defect
and check the message, the rejects row and that everything else survives.
"""

from __future__ import annotations

import json
from pathlib import Path

from gazeprep.datasets.reflacx import PHASE1_LABELS, PHASE23_LABELS

META_FIXED = "id,split,eye_tracking_data_discarded,image,dicom_id,subject_id,image_size_x,image_size_y"
FIX_HEADER = (
    "timestamp_start_fixation,timestamp_end_fixation,x_position,y_position,pupil_area_normalized,"
    "angular_resolution_x_pixels_per_degree,angular_resolution_y_pixels_per_degree,window_width,window_level,"
    "xmin_shown_from_image,ymin_shown_from_image,xmax_shown_from_image,ymax_shown_from_image,"
    "xmin_in_screen_coordinates,ymin_in_screen_coordinates,xmax_in_screen_coordinates,ymax_in_screen_coordinates"
)
GAZE_HEADER = FIX_HEADER.replace("timestamp_start_fixation,timestamp_end_fixation", "timestamp_sample")
WORDS_HEADER = "word,timestamp_start_word,timestamp_end_word"

# three fixations of a 2544 x 3056 (W x H) image; the third is off the image (control strip)
FIX_ROWS = [
    "7.08,7.293,405,420,1.131,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
    "7.4,7.9,1200,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
    "8.0,8.25,-150,900,1.0,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
]
WORD_ROWS = ["no,1.0,1.2", "pneumothorax,1.2,1.9", ".,1.9,2.0", "heart,2.5,2.8", "normal,2.8,3.1", ".,3.1,3.2"]
TRANSCRIPT = "no pneumothorax. heart normal."


def crlf(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def image_path(subject: int, study: int, dicom: str) -> str:
    s = str(subject)
    return f"physionet.org/files/mimic-cxr/2.0.0/files/p{s[:2]}/p{s}/s{study}/{dicom}.dcm"


def dicom_id(i: int) -> str:
    return f"{i:08x}-bde0afdd-112c0b34-7bc16630-4e384014"


def _label_cells(labels: tuple[str, ...], values: dict[str, str]) -> str:
    def default(lab: str) -> str:
        return "False" if lab in ("Support devices", "Quality issue") else ("" if lab == "Other" else "0")

    return ",".join(values.get(lab, default(lab)) for lab in labels)


def write_reflacx(root: Path) -> dict[str, dict]:
    """A 3-phase release: P102R000001 (phase 1), P201R000002 (phase 2, labels as ``5.0``),
    P300R000003 (phase 3, discarded, no gaze folder). Returns per-case facts for assertions."""
    md = root / "main_data"
    md.mkdir(parents=True)
    (root / "gaze_data").mkdir()
    cases = {
        "P102R000001": dict(phase=1, subject=10000032, study=50414267, dicom=dicom_id(1), discarded=False,
                            labels={"Atelectasis": "3", "Pleural effusion": "5", "Support devices": "True", "Other": "scoliosis|hernia"}),
        "P201R000002": dict(phase=2, subject=11000011, study=51000011, dicom=dicom_id(2), discarded=False,
                            labels={"Pneumothorax": "5.0", "Support devices": "False"}),
        "P300R000003": dict(phase=3, subject=12000012, study=52000012, dicom=dicom_id(3), discarded=True,
                            labels={"Atelectasis": "4"}),
    }  # fmt: skip
    for phase, labels in ((1, PHASE1_LABELS), (2, PHASE23_LABELS), (3, PHASE23_LABELS)):
        lines = [META_FIXED + "," + ",".join(labels)]
        for cid, c in cases.items():
            if c["phase"] != phase:
                continue
            lines.append(
                f"{cid},train,{c['discarded']},{image_path(c['subject'], c['study'], c['dicom'])},{c['dicom']},"
                f"{c['subject']},2544,3056," + _label_cells(labels, c["labels"])
            )
        (md / f"metadata_phase_{phase}.csv").write_bytes(crlf(lines))
    for cid, c in cases.items():
        d = md / cid
        d.mkdir()
        labels = PHASE1_LABELS if c["phase"] == 1 else PHASE23_LABELS
        (d / "chest_bounding_box.csv").write_bytes(crlf(["xmin,ymin,xmax,ymax", "381,508,2295,2441"]))
        ell = ["xmin,ymin,xmax,ymax,certainty," + ",".join(labels)]
        if cid == "P102R000001":
            flags = {"Atelectasis", "Support devices"}
            ell.append("734,1204,2211,2175,5," + ",".join(str(lab in flags) for lab in labels))
            ell.append("100,200,300,400,3," + ",".join(str(lab == "Pleural effusion") for lab in labels))
        (d / "anomaly_location_ellipses.csv").write_bytes(crlf(ell))  # header-only for the others
        if c["discarded"]:
            continue
        (d / "fixations.csv").write_bytes(crlf([FIX_HEADER, *FIX_ROWS]))
        (d / "timestamps_transcription.csv").write_bytes(crlf([WORDS_HEADER, *[_quote_word(r) for r in WORD_ROWS]]))
        (d / "transcription.txt").write_text(TRANSCRIPT)
        g = root / "gaze_data" / cid
        g.mkdir()
        gaze = [GAZE_HEADER]
        for i in range(5):
            t = -0.002 + 0.001 * i
            if i == 2:  # blink: positions empty
                gaze.append(f"{t:.3f},,,,,,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160")
            else:
                gaze.append(f"{t:.3f},{400 + i},{420 + i},1.1,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160")
        (g / "gaze.csv").write_bytes(crlf(gaze))
    return cases


def _quote_word(row: str) -> str:
    word, rest = row.split(",", 1) if not row.startswith(",") else (",", row[2:])
    return (f'"{word}"' if word in (",",) else word) + "," + rest


# ---------------------------------------------------------------------------------------------
EGD_MASTER_HEADER = (
    "dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,image_bottom_pad,image_left_pad,"
    "image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,dx4_icd,dx5,dx5_icd,dx6,dx6_icd,dx7,dx7_icd,dx8,dx8_icd,"
    "dx9,dx9_icd,normal_reports,Normal,CHF,pneumonia,consolidation,enlarged_cardiac_silhouette,"
    "linear__patchy_atelectasis,lobar__segmental_collapse,not_otherwise_specified_opacity___pleural__parenchymal_opacity__,"
    "pleural_effusion_or_thickening,pulmonary_edema__hazy_opacity,normal_anatomically,elevated_hemidiaphragm,"
    "hyperaeration,vascular_redistribution,atelectasis__chx,cardiomegaly__chx,consolidation__chx,edema__chx,"
    "enlarged_cardiomediastinum__chx,fracture__chx,lung_lesion__chx,lung_opacity__chx,no_finding__chx,"
    "pleural_effusion__chx,pleural_other__chx,pneumonia__chx,pneumothorax__chx,support_devices__chx,cxr_exam_indication"
)
EGD_GAZE_HEADER = (
    "SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,FPOGD,FPOGID,FPOGV,"
    "BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,BKDUR,BKPMIN,LPMM,LPMMV,RPMM,RPMMV,"
    "SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,Y_ORIGINAL"
)
# the three real rows of FORMATS 2.3 (pads 0,0,534,534; image 2544 x 3056)
EGD_REAL_DICOM = "1a3f39ce-ebe90275-9a66145a-af03360e-ee3b163b"
EGD_REAL_ROWS = [
    "1,0,1a3f39ce-ebe90275-9a66145a-af03360e-ee3b163b,45,0.72363,696216388878.0,0.45224,0.33879000000000004,0.01794,0.7056899999999999,2,1,0.46134,0.26619,1,0.37859,0.5943,18.33718,1.0527600000000001,1,0.6379,0.5979800000000001,18.19434,1.0606799999999998,1,0,0.0,20,3.5064800000000003,1,3.56681,1,0.0,0.0,0.0,998,1035",
    "1,0,1a3f39ce-ebe90275-9a66145a-af03360e-ee3b163b,68,1.09607,696220113269.0,0.44419,0.28933000000000003,0.73987,0.3562,3,1,0.37864000000000003,0.21775,1,0.37749,0.594,17.92645,1.0606799999999998,1,0.6367,0.59809,18.35567,1.06859,1,0,0.0,19,3.7337599999999997,1,3.7751099999999997,1,55.60791,106.13765,0.0,952,884",
    "1,0,1a3f39ce-ebe90275-9a66145a-af03360e-ee3b163b,86,1.3869,696223021482.0,0.39018,0.28168000000000004,1.11212,0.27478,4,1,0.38154,0.43718,1,0.37654,0.59767,18.143629999999998,1.0087899999999999,1,0.63485,0.60175,19.20525,1.0087899999999999,1,0,0.0,19,3.65403,1,3.8783199999999995,1,104.02783000000001,175.4447,0.0,642,860",
]
EGD_TAIL = ",0.0,0.0,0.0,0.0,1,1,0.5,0.5,1,0.4,0.6,18.0,1.0,1,0.6,0.6,18.0,1.0,1,0,0.0,19,3.6,1,3.8,1,0.0,0.0,0.0"


def egd_row(session: int, dicom: str, t: float, fx: float, fy: float, fs: float, fd: float, xo: int, yo: int) -> str:
    """One 37-column gaze row (the columns gazeprep does not read are filler)."""
    return f"{session},0,{dicom},1,{t},696216388878.0,{fx},{fy},{fs},{fd},1,1,{fx},{fy},1,0.4,0.6,18.0,1.0,1,0.6,0.6,18.0,1.0,1,0,0.0,19,3.6,1,3.8,1,0.0,0.0,0.0,{xo},{yo}"


def master_row(dicom: str, subject: int, study: int, pads: tuple[int, int, int, int], indication: str) -> str:
    s = str(subject)
    path = f"files/p{s[:2]}/p{s}/s{study}/{dicom}.dcm"
    top, bottom, left, right = pads
    dx = '"Heart failure, unspecified",I50.9' + ",," * 8
    labels = "0,0,1,0,0,1,0,0,0,0,1,0,0,0,0,,1,,-1,,,,,,,,,,"
    return (
        f"{dicom},{path},{study},{subject},33811834,F,20 - 30,{top},{bottom},{left},{right},{dx},{labels},{indication}"
    )


def write_png_mask(path: Path, h: int, w: int) -> None:
    import numpy as np
    from PIL import Image

    a = np.zeros((h, w), dtype=np.uint8)
    a[h // 4 : h // 2, w // 4 : w // 2] = 255
    Image.fromarray(a).save(path)


def write_egd(root: Path) -> dict:
    """Two cases: the real FORMATS rows (portrait 2544x3056, pads 0,0,534,534; no masks, so its
    size must come from a MIMIC root, see :func:`write_mimic`) and a landscape 40 x 30 case
    (pads 86,86,448,448) whose size comes from its mask PNGs; plus one calibration pseudo-id."""
    root.mkdir(parents=True, exist_ok=True)
    d2 = "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee"
    lines = [
        EGD_MASTER_HEADER,
        master_row(
            EGD_REAL_DICOM,
            15628804,
            58573295,
            (0, 0, 534, 534),
            '"___F with CHF and\nshortness of breath// ?Pulmonary edema"',
        ),
        master_row(d2, 19462352, 51900589, (86, 86, 448, 448), "cough"),
    ]
    (root / "master_sheet.csv").write_bytes(("\n".join(lines) + "\n").encode())
    calib = EGD_REAL_DICOM[:-5]
    # landscape 40 x 30 (W x H): screen x in (448, 1472), y in (86, 994)
    fx_rows = [
        *EGD_REAL_ROWS,
        egd_row(1, calib, 0.5, 0.5, 0.5, 0.1, 0.4, 960, 540),
        egd_row(1, calib, 0.9, 0.5, 0.5, 0.5, 0.4, 960, 540),
        egd_row(2, d2, 0.6, 0.5, 0.5, 0.2, 0.4, 20, 15),
        egd_row(2, d2, 1.2, 0.1, 0.5, 0.7, 0.5, -1, 15),
    ]
    (root / "fixations.csv").write_bytes(("\n".join([EGD_GAZE_HEADER, *fx_rows]) + "\n").encode())
    (root / "eye_gaze.csv").write_bytes(("\n".join([EGD_GAZE_HEADER, *fx_rows]) + "\n").encode())
    (root / "bounding_boxes.csv").write_text(
        "dicom_id,bbox_name,x1,x2,y1,y2\n"
        f"{EGD_REAL_DICOM},cardiac silhouette,1007.0,1743.0,1278.0,2040.0\n"
        f"{EGD_REAL_DICOM},left clavicle,1369.0,2363.0,309.0,671.0\n"
        f"{d2},trachea,10.0,12.0,1.0,9.0\n"
    )
    tr = root / "audio_segmentation_transcripts"
    for d in (EGD_REAL_DICOM, d2):
        (tr / d).mkdir(parents=True)
        json.dump(
            {
                "full_text": "the lungs are clear. heart size normal.",
                "time_stamped_text": [
                    {"phrase": "the", "begin_time": 0.0, "end_time": 0.3},
                    {"phrase": "lungs are clear.", "begin_time": 1.2, "end_time": 2.4},
                    {"phrase": "heart size normal.", "begin_time": 3.0, "end_time": 4.5},
                ],
            },
            (tr / d / "transcript.json").open("w"),
            sort_keys=True,
            indent=2,
        )
    for name in ("left_lung", "right_lung", "mediastanum", "aortic_knob"):
        write_png_mask(tr / d2 / f"{name}.png", 30, 40)
    return {"real": EGD_REAL_DICOM, "landscape": d2, "calibration": calib}


CHEXPERT_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
    "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
)
META_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
    "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"
)


def write_mimic(root: Path, images: list[tuple[str, int, int, int, int]], gz: bool = True) -> None:
    """MIMIC tables for ``images`` = [(dicom_id, subject, study, rows(H), columns(W))].

    CheXpert: first study Atelectasis 1.0, Edema -1.0, rest blank; NegBio: first study No Finding 0.0.
    """
    import gzip

    root.mkdir(parents=True, exist_ok=True)
    meta = [META_HEADER] + [
        f"{d},{s},{st},CHEST (PA AND LAT),PA,{h},{w},21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect"
        for d, s, st, h, w in images
    ]
    split = ["dicom_id,study_id,subject_id,split"] + [f"{d},{st},{s},validate" for d, s, st, _, _ in images]
    chex = [CHEXPERT_HEADER]
    neg = [CHEXPERT_HEADER]
    for i, (_, s, st, _, _) in enumerate(images):
        chex.append(f"{s},{st}," + ("1.0,,,-1.0," if i == 0 else ",,,,") + ",,,,,,,,,")
        neg.append(f"{s},{st}," + ",,,,,,,,0.0,,,,," if i == 0 else f"{s},{st}," + ",,,,,,,,,,,,,")
    for kind, lines in (("metadata", meta), ("split", split), ("chexpert", chex), ("negbio", neg)):
        data = ("\n".join(lines) + "\n").encode()
        name = root / f"mimic-cxr-2.0.0-{kind}.csv"
        if gz:
            (root / (name.name + ".gz")).write_bytes(gzip.compress(data))
        else:
            name.write_bytes(data)
