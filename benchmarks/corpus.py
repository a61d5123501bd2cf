"""A deterministic corpus of realistic Japanese knowledge-base chunks (200-800 characters each).

The texts read like the chunks of internal documents (work rules, IT help desk FAQ, expense rules,
a product manual, onboarding, security policy, facilities, customer support): a heading now and
then, sentences from about 150 templates whose slots are filled from domain vocabularies, numbers,
dates and times. The same seed always gives the same documents, chunks and order; every text in
one corpus is distinct (checked as it is generated). Standard library only.

    python -m benchmarks.corpus --chunks 5000 --stats
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

MIN_CHARS = 200
MAX_CHARS = 800
_SLOT = re.compile(r"\{(\w+)\}")

# --- vocabularies shared by every domain ------------------------------------------------------------

COMMON: dict[str, list[str]] = {
    "dept": [
        "人事部",
        "総務部",
        "経理部",
        "情報システム部",
        "営業部",
        "品質保証部",
        "法務部",
        "広報部",
        "開発部",
        "カスタマーサポート部",
        "購買部",
        "経営企画部",
    ],
    "role": ["所属長", "部門長", "担当役員", "総務担当者", "人事担当者", "チームリーダー", "上長", "管理者"],
    "system": [
        "勤怠管理システム",
        "経費精算システム",
        "社内ポータル",
        "人事ポータル",
        "会議室予約システム",
        "ファイルサーバー",
        "チャットツール",
        "ワークフローシステム",
        "資産管理台帳",
        "問い合わせ管理システム",
    ],
    "place": ["本社5階", "本社3階の総務窓口", "大阪支社", "名古屋営業所", "福岡オフィス", "横浜開発センター"],
    "weekday": ["月曜日", "火曜日", "水曜日", "木曜日", "金曜日"],
    "doc": ["申請書", "届出書", "報告書", "確認書", "チェックリスト", "手順書", "様式"],
    "timing": ["事前に", "速やかに", "翌営業日までに", "当日中に", "遅くとも3営業日前までに", "月末までに"],
    "connector": [
        "なお、",
        "また、",
        "ただし、",
        "このため、",
        "あわせて、",
        "特に、",
        "原則として、",
        "必要に応じて、",
    ],
}

# --- domains: document names, headings, sentence templates and their own vocabularies ----------------


@dataclass(frozen=True)
class Domain:
    key: str
    names: list[str]
    headings: list[str]
    sentences: list[str]
    words: dict[str, list[str]]


DOMAINS: list[Domain] = [
    Domain(
        "rules",
        ["就業規則", "就業規則_解説", "賃金規程", "育児介護休業規程", "在宅勤務規程"],
        ["第{n}条（{topic}）", "### 第{n}条（{topic}）", "## 第{m}章 {topic}"],
        [
            "{topic}については、{dept}が定める{doc}により{role}の承認を得なければなりません。",
            "所定労働時間は1日{h}時間とし、始業時刻は{hh}時{mm}分を標準とします。",
            "社員は、{topic}に関する{doc}を{timing}{role}へ提出してください。",
            "{role}は、業務の都合により{topic}の時期を変更することができます。",
            "年次有給休暇は、入社後{months}か月を経過した日に{days}日付与します。",
            "時間外労働を行う場合は、{timing}{system}で申請し、{role}の承認を受けてください。",
            "{topic}の取得単位は、1日、半日または1時間とします。",
            "本条の定めに違反した場合は、第{n}条に定める懲戒の対象となることがあります。",
            "{topic}の期間中の賃金は、別に定める賃金規程第{n}条によります。",
            "在宅勤務を行う日は、始業時と終業時に{system}へ打刻し、{role}に報告します。",
            "休憩時間は{hh}時{mm}分から{minutes}分間とし、自由に利用することができます。",
            "{topic}を希望する社員は、原則として取得予定日の{days}日前までに申し出てください。",
            "この規定は{year}年{month}月{day}日から施行し、同日以降の{topic}に適用します。",
            "{topic}に該当するかどうか判断に迷う場合は、{dept}の窓口（内線{ext}）に相談してください。",
            "深夜（22時から翌5時まで）に勤務した時間については、通常の賃金の{pct}％を割増して支払います。",
        ],
        {
            "topic": [
                "年次有給休暇",
                "時間外労働",
                "休日出勤",
                "育児休業",
                "介護休業",
                "慶弔休暇",
                "在宅勤務",
                "フレックスタイム",
                "服務規律",
                "副業",
                "休職",
                "退職手続",
                "出張",
                "振替休日",
            ]
        },
    ),
    Domain(
        "helpdesk",
        ["ITヘルプデスク_よくある質問", "情報システム利用ガイド", "リモートアクセス手順書", "PC貸与マニュアル"],
        ["Q{n}．{question}", "【{area}】", "■ {area}について"],
        [
            "{system}にログインできない場合は、まずブラウザのキャッシュを削除してから再度お試しください。",
            "パスワードは{chars}文字以上で、英大文字・英小文字・数字・記号のうち3種類以上を含めてください。",
            "VPNに接続できないときは、ネットワークを一度切断し、クライアントを再起動してください。",
            "貸与PCの{device}が故障した場合は、ヘルプデスクポータルからチケットを起票してください。",
            "緊急の場合は内線{ext}に電話してください。受付時間は平日{hh}:{mm}～{hh2}:00です。",
            "{area}の設定変更には{role}の承認が必要で、処理には通常{days}営業日かかります。",
            "ソフトウェアのインストールは、{system}に登録された許可済みのものに限ります。",
            "多要素認証の確認コードは{digits}桁で、発行から{minutes}分間有効です。",
            "共有フォルダの容量が{pct}％を超えると、新しいファイルを保存できなくなります。",
            "不審なメールを受信した場合は、添付ファイルを開かずに{dept}へ転送してください。",
            "{device}の持ち出しは、{doc}に記入のうえ{role}の許可を得てから行ってください。",
            "OSの更新プログラムは毎月第{nth}{weekday}に配信され、{days}日以内の適用が必要です。",
            "プリンターで印刷できない場合は、{place}の複合機の電源を入れ直してください。",
            "退職者のアカウントは最終出社日の翌日に停止され、{days}日後に削除されます。",
            "会議用のWeb会議ライセンスは{system}から申請でき、{timing}発行されます。",
        ],
        {
            "area": [
                "アカウントとパスワード",
                "ネットワーク",
                "メール",
                "PCとデバイス",
                "ソフトウェア",
                "セキュリティ",
            ],
            "question": [
                "パスワードを忘れてしまいました。",
                "VPNに接続できません。",
                "メールの容量がいっぱいです。",
                "PCが起動しません。",
                "ソフトウェアを追加したいです。",
                "スマートフォンでメールを見たいです。",
                "画面が真っ暗になりました。",
            ],
            "device": ["ノートPC", "スマートフォン", "モニター", "キーボード", "ACアダプター", "USBメモリ"],
        },
    ),
    Domain(
        "expense",
        ["社内FAQ_経費精算", "旅費規程", "経費精算マニュアル", "交際費取扱基準"],
        ["Q{n}．{question}", "【{area}】", "## {area}"],
        [
            "経費は発生日から{days}日以内に{system}で申請してください。",
            "領収書の原本は、申請後{timing}{dept}へ提出してください。電子帳簿保存の対象は画像でも構いません。",
            "{amount}円を超える{item}の購入は、事前に{role}の承認を得る必要があります。",
            "出張の日当は、日帰りの場合{amount}円、宿泊を伴う場合は1泊につき{amount2}円を支給します。",
            "タクシーの利用は、深夜や荷物が多い場合など、やむを得ない理由があるときに限ります。",
            "交際費は1人あたり{amount}円を上限とし、参加者の氏名と目的を{doc}に記入してください。",
            "立替払いした{item}の代金は、毎月{day}日締めで翌月の給与と合わせて振り込みます。",
            "インボイス制度に対応した適格請求書の場合は、登録番号の記載を確認してください。",
            "{item}の精算で領収書を紛失した場合は、支払証明書を作成し{role}の確認を受けてください。",
            "海外出張の宿泊費は、都市ごとに定めた上限額（{amount}円～{amount2}円）の範囲で実費を支給します。",
            "申請内容に不備があると差し戻されます。差し戻しから{days}日以内に再申請してください。",
            "法人カードで支払った{item}は、{system}に明細が自動で取り込まれます。",
            "定期券区間内の交通費は精算できません。経路の変更は{timing}{dept}に届け出てください。",
            "{year}年{month}月以降の申請は、新しい勘定科目コード（{code}）を使用してください。",
        ],
        {
            "area": ["交通費", "出張旅費", "交際費", "備品購入", "立替払い", "法人カード"],
            "question": [
                "領収書をなくしてしまいました。",
                "精算の締め日はいつですか。",
                "出張の日当はいくらですか。",
                "タクシー代は精算できますか。",
                "書籍の購入は経費になりますか。",
            ],
            "item": ["書籍", "文房具", "ソフトウェアライセンス", "会場費", "新幹線の乗車券", "宿泊費", "消耗品"],
        },
    ),
    Domain(
        "manual",
        ["製品マニュアル_スマートスピーカー", "取扱説明書_ワイヤレスイヤホン", "設置ガイド_ネットワークカメラ"],
        ["{n}．{area}", "■ {area}", "【{area}】"],
        [
            "本体の{part}を{sec}秒以上長押しすると、{mode}に切り替わります。",
            "{part}のランプが{color}に点滅しているときは、Wi-Fiに接続されていません。",
            "専用アプリで「{menu}」を選び、画面の指示に従って設定を進めてください。",
            "音声コマンドの例：「{phrase}」と話しかけると、{result}。",
            "充電は付属のUSB Type-Cケーブルで行い、満充電まで約{minutes}分かかります。",
            "ファームウェアは自動で更新されます。更新中（約{minutes}分）は電源を切らないでください。",
            "{mode}にすると、マイクがオフになり、{part}のランプが{color}に点灯します。",
            "初期化すると、登録したすべての設定が消去されます。初期化には約{sec}秒かかります。",
            "本製品は防滴仕様ではありません。浴室や屋外など水のかかる場所では使用しないでください。",
            "最大{devices}台までのBluetooth機器を登録でき、最後に接続した機器に自動で再接続します。",
            "動作温度は{temp}℃から{temp2}℃です。直射日光の当たる場所には設置しないでください。",
            "音量は{levels}段階で調整でき、夜間モードでは最大音量が{pct}％に制限されます。",
            "保証期間は購入日から{months}か月です。修理の際は保証書と購入時のレシートをご用意ください。",
            "{symptom}場合は、電源アダプターを抜き、{sec}秒待ってから差し直してください。",
        ],
        {
            "area": ["初期設定", "Wi-Fiの接続", "音声操作", "困ったときは", "仕様", "安全上のご注意", "お手入れ"],
            "part": ["天面ボタン", "アクションボタン", "電源ボタン", "ミュートボタン", "リング"],
            "mode": ["ペアリングモード", "ミュートモード", "おやすみモード", "セットアップモード"],
            "color": ["オレンジ", "青", "赤", "白", "緑"],
            "menu": ["デバイスを追加", "ネットワーク設定", "音声の設定", "ルーティン", "通知"],
            "phrase": ["明日の天気は？", "8時にアラームをかけて", "音楽を止めて", "リビングの電気をつけて"],
            "result": ["天気予報を読み上げます", "アラームを設定します", "再生を停止します", "照明が点灯します"],
            "symptom": ["反応しない", "音が途切れる", "ランプが点灯しない", "アプリから見つからない"],
        },
    ),
    Domain(
        "onboarding",
        ["新入社員オンボーディングガイド", "中途入社者ガイド", "新任管理職ハンドブック"],
        ["## {phase}", "### {phase}：{task}", "{n}. {task}"],
        [
            "入社初日は{hh}時{mm}分までに{place}の受付へお越しください。",
            "{phase}には、{task}を済ませておくと、その後の業務がスムーズに始められます。",
            "社員証は入社当日に{dept}から受け取り、{system}で写真を登録してください。",
            "最初の{weeks}週間は、メンターと週に1回、{minutes}分程度の面談を行います。",
            "研修では、{training}について{days}日間かけて学びます。",
            "分からないことがあれば、チャットツールの#新入社員チャンネルで気軽に質問してください。",
            "{task}の期限は入社後{days}日以内です。{system}から手続きできます。",
            "試用期間は{months}か月で、期間中に{role}と目標設定の面談を行います。",
            "配属先の{dept}では、{training}のOJTを通じて業務を覚えていきます。",
            "入社{months}か月後にフォローアップ研修があり、{place}で実施します。",
            "名刺は{system}から申請すると、{days}営業日ほどで届きます。",
            "通勤経路の届出は、{timing}人事ポータルから行ってください。",
        ],
        {
            "phase": ["入社前の準備", "入社初日", "最初の1週間", "最初の1か月", "3か月後の振り返り"],
            "task": ["雇用契約書の提出", "給与振込口座の登録", "通勤経路の届出", "PCの初期設定", "健康診断の予約"],
            "training": ["情報セキュリティ", "ビジネスマナー", "コンプライアンス", "製品知識", "社内システムの使い方"],
        },
    ),
    Domain(
        "security",
        ["情報セキュリティ基本方針", "個人情報取扱規程", "クラウドサービス利用基準"],
        ["第{n}条（{topic}）", "## {topic}", "{n}．{topic}"],
        [
            "{info}は、業務上必要な範囲に限って利用し、{role}の許可なく社外へ持ち出してはなりません。",
            "{info}を含む電子ファイルは、パスワードを設定するか暗号化したうえで送付してください。",
            "情報漏えいの疑いがある場合は、{timing}{dept}（内線{ext}）へ報告しなければなりません。",
            "クラウドサービスを新たに利用するときは、{doc}を{dept}へ提出し、審査を受けてください。",
            "離席する際は、画面をロックし、机の上に{info}を放置しないでください。",
            "{info}の保存期間は{years}年とし、期間を過ぎたものは{dept}の立会いのもとで廃棄します。",
            "私物の{device}を業務に使用することは、原則として禁止します。",
            "アクセス権限は{months}か月ごとに棚卸しを行い、不要な権限は速やかに削除します。",
            "委託先に{info}を預ける場合は、秘密保持契約を締結し、管理状況を年{times}回確認します。",
            "セキュリティ研修は全社員が年{times}回受講し、理解度テストで{pct}点以上を取る必要があります。",
            "標的型攻撃メールの訓練を年{times}回実施します。開封した場合は再受講の対象となります。",
        ],
        {
            "topic": ["目的", "適用範囲", "情報資産の分類", "持ち出しの制限", "事故発生時の対応", "教育"],
            "info": ["顧客情報", "個人情報", "機密情報", "取引先の見積書", "人事評価データ", "設計資料"],
            "device": ["スマートフォン", "USBメモリ", "タブレット", "ノートPC"],
        },
    ),
    Domain(
        "facilities",
        ["会議室利用ルール", "オフィス利用ガイド", "社用車管理規程"],
        ["■ {facility}", "【{facility}の利用】", "{n}．{facility}"],
        [
            "{facility}は{system}から予約でき、1回あたり最長{h}時間まで利用できます。",
            "{facility}の予約は、利用日の{days}日前から受け付けます。",
            "利用後は机と椅子を元の配置に戻し、ホワイトボードを消してください。",
            "{facility}の鍵は{place}で貸し出しています。返却は当日{hh}時までです。",
            "予約時刻から{minutes}分経っても利用がない場合、予約は自動で取り消されます。",
            "来客がある場合は、{timing}受付システムに来訪者の氏名と会社名を登録してください。",
            "{facility}で飲食する場合は、においの強いものを避け、ごみは各自で持ち帰ってください。",
            "社用車を使用するときは、運行日誌に走行距離と給油量を記入し、{role}に提出します。",
            "{facility}の設備が故障している場合は、{dept}（内線{ext}）へ連絡してください。",
            "毎月第{nth}{weekday}は設備点検のため、{facility}を利用できません。",
        ],
        {
            "facility": ["大会議室", "小会議室", "応接室", "Web会議ブース", "リフレッシュスペース", "社用車"],
        },
    ),
    Domain(
        "support",
        ["カスタマーサポート対応マニュアル", "問い合わせ対応FAQ", "返品・交換ポリシー"],
        ["Q{n}．{question}", "## {area}", "【{area}】"],
        [
            "お客様からの問い合わせは、受付から{h}時間以内に一次回答することを目標とします。",
            "{case}の場合は、注文番号と購入日を確認したうえで、{system}に記録してください。",
            "返品は商品到着後{days}日以内に限り受け付けます。開封済みの{item}は対象外です。",
            "交換品の発送には通常{days}営業日かかります。在庫がない場合はお客様に連絡します。",
            "クレームにつながるおそれがある場合は、{timing}{role}にエスカレーションしてください。",
            "電話での対応時間は平日{hh}時から{hh2}時までです。時間外はメールで受け付けます。",
            "{case}に関する問い合わせが1日に{times}件を超えた場合は、{dept}に共有してください。",
            "対応履歴には、お客様とのやり取りを時系列で記録し、個人情報は必要最小限にとどめます。",
            "返金は、クレジットカードの場合は次回以降の請求で相殺され、反映まで最大{days}日かかります。",
            "問い合わせ番号（{code}）を伝えると、担当者が変わっても経緯を確認できます。",
        ],
        {
            "area": ["受付の流れ", "返品・交換", "返金", "エスカレーション", "記録のルール"],
            "question": ["商品が届きません。", "初期不良の交換はできますか。", "領収書は発行できますか。"],
            "case": ["配送遅延", "初期不良", "請求内容の誤り", "解約の申し出", "商品の破損"],
            "item": ["ソフトウェア", "消耗品", "食品", "カスタマイズ品"],
        },
    ),
]

# Number-like slots: drawn fresh every time, so that otherwise similar sentences differ.
_NUMBERS: dict[str, tuple[int, int]] = {
    "n": (1, 120),
    "m": (1, 12),
    "h": (2, 10),
    "hh": (7, 10),
    "hh2": (17, 21),
    "mm": (0, 59),
    "days": (2, 30),
    "weeks": (2, 8),
    "months": (1, 24),
    "years": (1, 10),
    "minutes": (5, 90),
    "sec": (3, 30),
    "pct": (10, 95),
    "ext": (1000, 9999),
    "chars": (8, 16),
    "digits": (4, 8),
    "amount": (1000, 50000),
    "amount2": (5000, 90000),
    "year": (2019, 2026),
    "month": (1, 12),
    "day": (1, 28),
    "nth": (1, 4),
    "times": (1, 12),
    "devices": (2, 8),
    "temp": (0, 10),
    "temp2": (30, 40),
    "levels": (10, 32),
    "code": (1000, 9999),
}
_FORMATTED = {"mm": "{:02d}", "code": "A-{:04d}", "amount": "{:,}", "amount2": "{:,}"}


class _Template:
    """A template pre-split into literal text and slot names, so filling it is one join."""

    __slots__ = ("parts",)

    def __init__(self, text: str) -> None:
        self.parts: list[tuple[str, str | None]] = []
        pos = 0
        for match in _SLOT.finditer(text):
            self.parts.append((text[pos : match.start()], match.group(1)))
            pos = match.end()
        self.parts.append((text[pos:], None))

    def fill(self, rng: random.Random, words: dict[str, list[str]]) -> str:
        out: list[str] = []
        for literal, slot in self.parts:
            out.append(literal)
            if slot is None:
                continue
            if slot in _NUMBERS:
                low, high = _NUMBERS[slot]
                out.append(_FORMATTED.get(slot, "{}").format(rng.randint(low, high)))
            else:
                out.append(rng.choice(words[slot]))
        return "".join(out)


@dataclass(frozen=True)
class _CompiledDomain:
    domain: Domain
    headings: list[_Template]
    sentences: list[_Template]
    words: dict[str, list[str]]


def _compile(domain: Domain) -> _CompiledDomain:
    words = {**COMMON, **domain.words}
    compiled = _CompiledDomain(
        domain,
        [_Template(h) for h in domain.headings],
        [_Template(s) for s in domain.sentences],
        words,
    )
    for template in compiled.headings + compiled.sentences:  # fail at import, not in the middle of a run
        for _, slot in template.parts:
            if slot is not None and slot not in _NUMBERS and slot not in words:
                raise KeyError(f"corpus template slot {{{slot}}} has no vocabulary in domain {domain.key}")
    return compiled


_COMPILED = [_compile(d) for d in DOMAINS]
_CONNECTOR = COMMON["connector"]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    doc_name: str
    chunk_index: int
    content: str


def _chunk_text(rng: random.Random, domain: _CompiledDomain) -> str:
    target = rng.randint(MIN_CHARS, MAX_CHARS)
    pieces: list[str] = []
    length = 0
    if rng.random() < 0.35:
        heading = rng.choice(domain.headings).fill(rng, domain.words)
        pieces.append(heading + "\n")
        length += len(heading) + 1
    order = rng.sample(domain.sentences, len(domain.sentences))  # no template twice until all were used
    paragraph = 0
    count = 0
    while length < target:
        sentence = order[count % len(order)].fill(rng, domain.words)
        count += 1
        if paragraph and rng.random() < 0.25:
            sentence = rng.choice(_CONNECTOR) + sentence
        if paragraph >= 3 and rng.random() < 0.3 and length + 1 < MAX_CHARS:
            pieces.append("\n")
            length += 1
            paragraph = 0
        if length + len(sentence) > MAX_CHARS:
            if length >= MIN_CHARS:
                break
            sentence = sentence[: MAX_CHARS - length - 1] + "。"
        pieces.append(sentence)
        length += len(sentence)
        paragraph += 1
    return "".join(pieces).rstrip("\n")


def generate(chunks: int, seed: int = 0) -> Iterator[Chunk]:
    """`chunks` distinct chunks in document order (documents of 20-250 chunks), always the same for a seed.

    Streams: only the texts' 16-byte digests are kept to check distinctness, so 200,000 chunks
    cost a few MB."""
    rng = random.Random(seed)
    seen: set[bytes] = set()
    made = 0
    doc_number = 0
    while made < chunks:
        domain = _COMPILED[doc_number % len(_COMPILED)] if doc_number < len(_COMPILED) else rng.choice(_COMPILED)
        doc_number += 1
        name = f"{rng.choice(domain.domain.names)}_{2019 + doc_number % 8}年版_{doc_number:05d}"
        doc_id = f"bench-{seed}-{doc_number:06d}"
        size = min(rng.randint(20, 250), chunks - made)
        for index in range(size):
            while True:
                text = _chunk_text(rng, domain)
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                if digest not in seen:
                    seen.add(digest)
                    break
            yield Chunk(doc_id, name + (".md" if doc_number % 2 else ".txt"), index, text)
        made += size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or summarise the benchmark corpus.")
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", action="store_true", help="print a summary instead of the texts")
    args = parser.parse_args(argv)
    lengths: list[int] = []
    docs: set[str] = set()
    for chunk in generate(args.chunks, args.seed):
        if args.stats:
            lengths.append(len(chunk.content))
            docs.add(chunk.doc_id)
        else:
            print(f"--- {chunk.doc_name} #{chunk.chunk_index}\n{chunk.content}")
    if args.stats and lengths:
        lengths.sort()
        print(
            f"{len(lengths)} chunks in {len(docs)} documents; characters min {lengths[0]}, "
            f"median {lengths[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.0f}, max {lengths[-1]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
